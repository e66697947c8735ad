"""Training: run one train job from its normalized spec to a model file."""

import logging
import math
import time

import numpy as np

from rnnjobs.batching import BatchPlanError, PADDING, sequential_plan, series_windows, stateful_plan, stateless_plan
from rnnjobs.data import DataError, read_samples, read_series
from rnnjobs.scaling import Scaler
from rnnjobs.validation import check_sample_shapes

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training failed, for example because the loss became NaN; no model file was written."""


def architecture_of(job, n_features, n_targets):
    return {
        "hidden_layers": job["model"]["hidden_layers"],
        "output_activation": job["model"]["output_activation"],
        "n_features": n_features,
        "n_targets": n_targets,
        "return_sequences": job["shapes"]["return_sequences"],
    }


def load_training_data(job):
    """Read the job's data and split it into training and validation parts.

    Returns
    -------
    dict
        ``train`` and ``validation`` (each ``(features, targets)`` or None),
        ``feature_names``, ``target_names``, ``units`` and a ``summary`` for the model file.
    """
    spec = job["data"]
    split = job["training"]["validation_split"]
    if spec.get("layout", "series") == "samples":
        data = read_samples(spec)
        check_sample_shapes(job, job["data"]["x"], data.features.shape, job["data"].get("y", "y"), data.targets.shape)
        n_samples = len(data.features)
        n_validation = int(round(split * n_samples))
        cut = n_samples - n_validation
        train = (data.features[:cut], data.targets[:cut])
        validation = (data.features[cut:], data.targets[cut:]) if n_validation else None
        summary = {"layout": "samples", "file": data.file, "samples": n_samples, "validation_samples": n_validation}
    else:
        data = read_series(spec, spec["features"], spec["targets"], spec.get("static_features", []))
        n_locations = len(data.location_ids)
        n_validation = int(round(split * n_locations)) if split else 0
        order = np.random.default_rng(job["training"]["seed"]).permutation(n_locations)
        validation_rows = np.sort(order[:n_validation])
        train_rows = np.sort(order[n_validation:])
        train = (data.features[train_rows], data.targets[train_rows])
        validation = (data.features[validation_rows], data.targets[validation_rows]) if n_validation else None
        summary = {
            "layout": "series",
            "file": data.file,
            "location_dim": data.location_dim,
            "train_locations": [str(v) for v in data.location_ids[train_rows]],
            "validation_locations": [str(v) for v in data.location_ids[validation_rows]],
            "time": {"start": data.time_start, "stop": data.time_start + data.features.shape[1]},
        }
    summary["masked_targets"] = data.masked_targets
    if len(train[0]) == 0:
        raise DataError(f"{spec['file']}: no training data left after the validation split of {split}")
    return {
        "train": train,
        "validation": validation,
        "feature_names": data.feature_names,
        "target_names": data.target_names,
        "units": data.units,
        "summary": summary,
    }


def _make_plan(job, features, targets, rng, label):
    shapes = job["shapes"]
    batch_size, timesteps = shapes["batch_size"], shapes["timesteps"]
    remainder = job["training"]["remainder"]
    n_series, n_times = features.shape[:2]
    samples = job["data"].get("layout") == "samples"
    try:
        if samples and shapes["stateful"]:
            plan = sequential_plan(n_series, batch_size, remainder)
        elif shapes["stateful"]:
            plan = stateful_plan(n_series, n_times, timesteps, batch_size, remainder)
        else:
            windows = series_windows(n_series, n_times, timesteps, 1 if samples else shapes["stride"])
            windows = windows[_has_valid_target(targets, windows, timesteps, shapes["return_sequences"])]
            plan = stateless_plan(windows, batch_size, remainder, rng)
    except BatchPlanError as err:
        unit = "samples" if samples else "locations"
        fix = (
            f"choose a batch_size that divides the number of {unit}, or set training.remainder to 'drop'"
            if shapes["stateful"]
            else "set training.remainder to 'pad' or 'drop'"
        )
        raise DataError(
            f"{job['data']['file']}: {label} data ({_dataset_label(job)}): {err}; "
            f"batch_size={batch_size}, {n_series} {unit}; {fix}"
        ) from err
    if plan.dropped:
        logger.info("%s: %s data: left out to fill whole batches: %s", job["name"], label, plan.dropped)
    if not len(plan):
        raise DataError(f"{job['data']['file']}: {label} data ({_dataset_label(job)}) gives no batch of {batch_size}")
    return plan


def _dataset_label(job):
    spec = job["data"]
    if spec.get("layout") == "samples":
        return f"datasets {spec['x']!r} and {spec.get('y', 'y')!r}"
    return "datasets " + ", ".join(repr(name) for name in spec["features"] + spec["targets"])


def _has_valid_target(targets, windows, timesteps, return_sequences):
    """Return a mask of the windows that have at least one valid target."""
    if targets.ndim == 2:
        return np.isfinite(targets[windows[:, 0]]).any(axis=-1)
    valid = np.isfinite(targets).any(axis=-1)
    if not return_sequences:
        return valid[windows[:, 0], windows[:, 1] + timesteps - 1]
    counts = np.concatenate([np.zeros((len(valid), 1), np.int64), np.cumsum(valid, axis=1)], axis=1)
    return counts[windows[:, 0], windows[:, 1] + timesteps] > counts[windows[:, 0], windows[:, 1]]


def _epoch_rng(seed, epoch):
    """Return the generator that shuffles epoch ``epoch``: a function of the seed and the epoch, so a resumed run repeats it."""
    return np.random.default_rng([seed, epoch])


def _make_batches(features, targets, plan, timesteps, return_sequences, shuffle_seed=None, job=None, first_epoch=0):
    """Return a Keras ``PyDataset`` that cuts each batch's windows when asked for it."""
    import keras

    class WindowBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.plan = plan
            self.epoch = first_epoch
            self.offsets = np.arange(timesteps)

        def __len__(self):
            return len(self.plan)

        def __getitem__(self, index):
            locations = self.plan.locations[index]
            padding = locations == PADDING
            rows = np.where(padding, 0, locations)[:, None]
            steps = self.plan.starts[index][:, None] + self.offsets[None, :]
            x = features[rows, steps]
            if targets.ndim == 2:
                y = targets[rows[:, 0]].copy()
            elif return_sequences:
                y = targets[rows, steps]
            else:
                y = targets[rows[:, 0], steps[:, -1]]
            if padding.any():
                x[padding] = 0.0
                y[padding] = np.nan
            return x, y

        def on_epoch_end(self):
            self.epoch += 1
            if shuffle_seed is not None:
                self.plan = _make_plan(job, features, targets, _epoch_rng(shuffle_seed, self.epoch), "training")

    return WindowBatches()


def _callbacks(job, train_plan, validation_plan, has_validation):
    import keras

    from rnnjobs.models import reset_states

    class ResetStates(keras.callbacks.Callback):
        """Zero stateful RNN states where the plans say a slot starts a new series."""

        def on_train_batch_begin(self, batch, logs=None):
            if train_plan.resets[batch]:
                reset_states(self.model)

        def on_test_begin(self, logs=None):
            reset_states(self.model)

        def on_test_batch_begin(self, batch, logs=None):
            if validation_plan is not None and validation_plan.resets[batch]:
                reset_states(self.model)

    class FailOnNaN(keras.callbacks.Callback):
        """Stop the job with an error as soon as the loss is not finite."""

        def on_train_batch_end(self, batch, logs=None):
            loss = float((logs or {}).get("loss", 0.0))
            if not math.isfinite(loss):
                raise TrainingError(
                    f"{job['name']}: training loss became {loss} at batch {batch}; no model file was written. "
                    "Lower training.learning_rate, check the scaling, or look for extreme values in the data"
                )

    callbacks = [FailOnNaN()]
    if job["shapes"]["stateful"]:
        callbacks.append(ResetStates())
    stopping = job["training"]["early_stopping"]
    if stopping is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss" if has_validation else "loss",
                patience=stopping.get("patience", 5),
                min_delta=stopping.get("min_delta", 0.0),
                restore_best_weights=True,
            )
        )
    return callbacks


def train_job(job):
    """Train the model a normalized train job describes and write its model file.

    Parameters
    ----------
    job : dict
        A train job from :func:`rnnjobs.spec.load_job`.

    Returns
    -------
    dict
        ``name``, ``output``, ``weights_sha256``, ``epochs`` run, final ``loss`` and ``seconds``.

    Raises
    ------
    DataError
        If the input data is invalid; nothing is written.
    TrainingError
        If the loss becomes NaN; nothing is written.
    """
    import keras

    from rnnjobs import models
    from rnnjobs.checkpoints import TrainingCheckpoint
    from rnnjobs.modelfile import write_model_file
    from rnnjobs.output import atomic_output
    from rnnjobs.runtime import provenance, set_seed

    started = time.time()
    shapes, settings = job["shapes"], job["training"]
    set_seed(settings["seed"])

    data = load_training_data(job)
    train_x, train_y = data["train"]
    feature_scaler = Scaler(job["scaling"]["features"]).fit(train_x)
    target_scaler = Scaler(job["scaling"]["targets"]).fit(train_y)

    def scale(part):
        return feature_scaler.transform(part[0]), target_scaler.transform(part[1])

    train_x, train_y = scale(data["train"])
    checkpoint = TrainingCheckpoint(job)
    shuffle_seed = None if shapes["stateful"] else settings["seed"]
    first_rng = None if shuffle_seed is None else _epoch_rng(shuffle_seed, checkpoint.initial_epoch)
    train_plan = _make_plan(job, train_x, train_y, first_rng, "training")
    train_batches = _make_batches(
        train_x, train_y, train_plan, shapes["timesteps"], shapes["return_sequences"], shuffle_seed, job, checkpoint.initial_epoch
    )

    validation_batches, validation_plan = None, None
    if data["validation"] is not None:
        validation_x, validation_y = scale(data["validation"])
        validation_plan = _make_plan(job, validation_x, validation_y, None, "validation")
        validation_batches = _make_batches(validation_x, validation_y, validation_plan, shapes["timesteps"], shapes["return_sequences"])

    # The model file records what the remainder policy left out, beside the masked target count.
    data["summary"]["left_out"] = {"training": train_plan.dropped}
    if validation_plan is not None:
        data["summary"]["left_out"]["validation"] = validation_plan.dropped

    architecture = architecture_of(job, len(data["feature_names"]), len(data["target_names"]))
    model = models.build_training_model(architecture, shapes["batch_size"], shapes["timesteps"], shapes["stateful"], seed=settings["seed"])
    optimizer = keras.optimizers.get({"class_name": settings["optimizer"], "config": {"learning_rate": settings["learning_rate"]}})
    model.compile(optimizer=optimizer, loss=models.masked_loss(settings["loss"]), jit_compile=settings["jit_compile"])

    logger.info(
        "%s: training %s on %d batches of %d x %d steps for up to %d epochs",
        job["name"], ", ".join(spec["type"] for spec in architecture["hidden_layers"]),
        len(train_plan), shapes["batch_size"], shapes["timesteps"], settings["epochs"],
    )
    callbacks = _callbacks(job, train_plan, validation_plan, validation_batches is not None)
    model.fit(
        train_batches,
        validation_data=validation_batches,
        epochs=settings["epochs"],
        initial_epoch=checkpoint.initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=[*callbacks, checkpoint.callback(callbacks)],
    )
    # Keras's own history lacks the epochs run before an interruption.
    history = checkpoint.history
    final_loss = history["loss"][-1]
    if not all(math.isfinite(v) for values in history.values() for v in values):
        raise TrainingError(f"{job['name']}: the loss was not finite during training; no model file was written")

    weights_sha256 = models.weights_hash(model)
    metadata = {
        "architecture": architecture,
        "feature_names": data["feature_names"],
        "static_features": job["data"].get("static_features", []),
        "target_names": data["target_names"],
        "units": data["units"],
        "scalers": {"features": feature_scaler.to_dict(), "targets": target_scaler.to_dict()},
        "shapes": shapes,
        "weight_layout": models.weight_layout(model),
        "weights_sha256": weights_sha256,
        "history": history,
        "data": data["summary"],
        "job": {key: value for key, value in job.items() if key != "source"},
        "spec_sha256": job["spec_sha256"],
        "provenance": provenance(job, started),
    }
    with atomic_output(job["output"]["model_file"]) as temporary:
        write_model_file(model, temporary, metadata)
    checkpoint.remove()

    seconds = time.time() - started
    logger.info("%s: wrote %s (weights sha256 %s) after %d epochs, loss %.4g", job["name"], job["output"]["model_file"], weights_sha256[:12], len(history["loss"]), final_loss)
    return {
        "name": job["name"],
        "kind": "train",
        "output": job["output"]["model_file"],
        "weights_sha256": weights_sha256,
        "epochs": len(history["loss"]),
        "loss": final_loss,
        "seconds": seconds,
    }
