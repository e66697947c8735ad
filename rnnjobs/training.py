"""Training: run one train job from its normalized spec to a model file."""

import logging
import math
import time

import numpy as np

from rnnjobs.batching import BatchPlanError, sequential_plan, stateful_plan, window_blocks
from rnnjobs.data import ArrayReader, DataError, SeriesReader, read_samples
from rnnjobs.pipeline import BLOCK_LOCATION_STEPS, BatchStream, DataPart, scan_part, target_mode
from rnnjobs.scaling import Scaler
from rnnjobs.validation import check_sample_shapes

logger = logging.getLogger(__name__)

# Training steps run per call into TensorFlow. Small RNNs are latency-bound, so
# running several steps per call saves most of the Python work between steps.
# The steps and their results are the same as with one step per call.
STEPS_PER_EXECUTION = 16


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


def open_training_data(job):
    """Open the job's data and split it into training and validation parts.

    Series are read lazily through a :class:`rnnjobs.data.SeriesReader`, which
    the caller closes. The samples layout is read whole.

    Returns
    -------
    reader : SeriesReader or ArrayReader
    train, validation : DataPart
        ``validation`` is None without a validation split.
    summary : dict
        What was read, for the model file.
    mode : str
        How targets are taken from a window; see :func:`rnnjobs.pipeline.target_mode`.
    """
    spec = job["data"]
    split = job["training"]["validation_split"]
    if spec.get("layout", "series") == "samples":
        data = read_samples(spec)
        check_sample_shapes(job, job["data"]["x"], data.features.shape, job["data"].get("y", "y"), data.targets.shape)
        reader = ArrayReader(data)
        n_samples = reader.n_series
        n_validation = int(round(split * n_samples))
        train_rows = np.arange(n_samples - n_validation)
        validation_rows = np.arange(n_samples - n_validation, n_samples)
        summary = {"layout": "samples", "file": data.file, "samples": n_samples, "validation_samples": n_validation}
        mode = target_mode(data.targets.ndim, job["shapes"]["return_sequences"])
    else:
        reader = SeriesReader(spec, spec["features"], spec["targets"], spec.get("static_features", []))
        n_locations = reader.n_series
        n_validation = int(round(split * n_locations)) if split else 0
        order = np.random.default_rng(job["training"]["seed"]).permutation(n_locations)
        validation_rows = np.sort(order[:n_validation])
        train_rows = np.sort(order[n_validation:])
        summary = {
            "layout": "series",
            "file": reader.file,
            "location_dim": reader.location_dim,
            "train_locations": [str(v) for v in reader.location_ids[train_rows]],
            "validation_locations": [str(v) for v in reader.location_ids[validation_rows]],
            "time": {"start": reader.time_start, "stop": reader.time_start + reader.n_times},
        }
        mode = target_mode(3, job["shapes"]["return_sequences"])
    if len(train_rows) == 0:
        reader.close()
        raise DataError(f"{spec['file']}: no training data left after the validation split of {split}")
    train = DataPart(reader, train_rows, "training")
    validation = DataPart(reader, validation_rows, "validation") if len(validation_rows) else None
    return reader, train, validation, summary, mode


def make_batch_stream(job, part, scalers, mode, fit_scalers, max_location_steps=BLOCK_LOCATION_STEPS):
    """Check a part's data, fit the scalers on it if asked, and plan its batches.

    The part is read once here, block by block, so invalid values and batch
    counts that the remainder policy rejects fail the job before training.

    Returns
    -------
    BatchStream

    Raises
    ------
    DataError
        If the data is invalid or does not fill whole batches under the
        job's remainder policy.
    """
    shapes = job["shapes"]
    batch_size, timesteps = shapes["batch_size"], shapes["timesteps"]
    remainder = job["training"]["remainder"]
    samples = job["data"].get("layout") == "samples"
    stride = 1 if samples else shapes["stride"]

    # Stateful batches follow a plan of consecutive windows; the blocks then serve only the scan.
    blocks = window_blocks(
        part.n_series, part.n_times, timesteps, timesteps if shapes["stateful"] else stride,
        max_location_steps, part.reader.chunk_series,
    )
    counts = scan_part(part, blocks, timesteps, mode, scalers if fit_scalers else None)

    seed = None if shapes["stateful"] or part.label != "training" else job["training"]["seed"]
    try:
        if shapes["stateful"]:
            if samples:
                plan = sequential_plan(part.n_series, batch_size, remainder)
            else:
                plan = stateful_plan(part.n_series, part.n_times, timesteps, batch_size, remainder)
            stream = BatchStream(part, scalers, batch_size, timesteps, mode, plan=plan, max_location_steps=max_location_steps)
        else:
            stream = BatchStream(part, scalers, batch_size, timesteps, mode, blocks=blocks, window_counts=counts, remainder=remainder, seed=seed)
    except BatchPlanError as err:
        unit = "samples" if samples else "locations"
        if shapes["stateful"]:
            fixes = []
            if part.n_series % batch_size:
                fixes.append(f"choose a batch_size that divides the number of {unit}")
            if not samples and part.n_times % timesteps:
                fixes.append(f"choose a timesteps that divides the {part.n_times} steps")
            fix = ", ".join(fixes + ["or set training.remainder to 'drop'"])
        else:
            fix = "set training.remainder to 'pad' or 'drop'"
        raise DataError(
            f"{job['data']['file']}: {part.label} data ({_dataset_label(job)}): {err}; "
            f"batch_size={batch_size}, {part.n_series} {unit}; {fix}"
        ) from err
    if stream.dropped:
        logger.info("%s: %s data: left out or padded to fill whole batches: %s", job["name"], part.label, stream.dropped)
    if not stream.n_batches:
        raise DataError(f"{job['data']['file']}: {part.label} data ({_dataset_label(job)}) gives no batch of {batch_size}")
    return stream


def _dataset_label(job):
    spec = job["data"]
    if spec.get("layout") == "samples":
        return f"datasets {spec['x']!r} and {spec.get('y', 'y')!r}"
    return "datasets " + ", ".join(repr(name) for name in spec["features"] + spec["targets"])


def _callbacks(job, has_validation):
    import keras

    class FailOnNaN(keras.callbacks.Callback):
        """Stop the job with an error soon after the loss stops being finite.

        Keras calls the batch hook once per call into TensorFlow, so every
        :data:`STEPS_PER_EXECUTION` steps, with the running mean of the
        epoch's loss. That mean stays non-finite once one step was, so no
        step goes unchecked, but an infinite loss followed by NaN steps
        shows as NaN.
        """

        def _check(self, logs, where):
            loss = float((logs or {}).get("loss", 0.0))
            if not math.isfinite(loss):
                raise TrainingError(
                    f"{job['name']}: training loss became {loss} {where}; no model file was written. "
                    "Lower training.learning_rate, check the scaling, or look for extreme values in the data"
                )

        def on_train_batch_end(self, batch, logs=None):
            self._check(logs, f"by batch {batch + 1}")

        def on_epoch_end(self, epoch, logs=None):
            self._check(logs, f"in epoch {epoch + 1}")

    callbacks = [FailOnNaN()]
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


def train_job(job, max_location_steps=BLOCK_LOCATION_STEPS):
    """Train the model a normalized train job describes and write its model file.

    Parameters
    ----------
    job : dict
        A train job from :func:`rnnjobs.spec.load_job`.
    max_location_steps : int, default=BLOCK_LOCATION_STEPS
        Size of the blocks of data read and held at once, in location-steps;
        it bounds the memory the input data takes.

    Returns
    -------
    dict
        ``name``, ``output``, ``weights_sha256``, ``epochs`` run, final
        ``loss``, ``windows`` trained on (padding slots not counted),
        ``fit_seconds`` spent in training and ``seconds`` in all.

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

    reader, train_part, validation_part, summary, mode = open_training_data(job)
    with reader:
        scalers = (Scaler(job["scaling"]["features"]), Scaler(job["scaling"]["targets"]))
        train_batches = make_batch_stream(job, train_part, scalers, mode, True, max_location_steps)
        validation_batches = None
        if validation_part is not None:
            validation_batches = make_batch_stream(job, validation_part, scalers, mode, False, max_location_steps)
        if reader.filled_features:
            logger.info("%s: filled %d missing feature value(s) with policy %r", job["name"], reader.filled_features, job["data"]["missing_features"])
        if reader.masked_targets:
            logger.info("%s: %d target value(s) missing or outside valid_range are masked in the loss", job["name"], reader.masked_targets)
        streams = [stream for stream in (train_batches, validation_batches) if stream is not None]
        summary["masked_targets"] = reader.masked_targets
        # What the remainder policy left out or padded, and the batches and windows of each epoch.
        summary["left_out"] = {stream.part.label: stream.dropped for stream in streams}
        summary["batches"] = {stream.part.label: {"batches": stream.n_batches, "windows": stream.n_windows} for stream in streams}

        n_features, n_targets = len(reader.feature_names), len(reader.target_names)
        target_shape = (n_targets,) if mode != "sequence" else (shapes["timesteps"], n_targets)
        architecture = architecture_of(job, n_features, n_targets)
        model = models.build_training_model(architecture, shapes["batch_size"], shapes["timesteps"], shapes["stateful"], seed=settings["seed"])
        optimizer = keras.optimizers.get({"class_name": settings["optimizer"], "config": {"learning_rate": settings["learning_rate"]}})
        model.compile(
            optimizer=optimizer,
            loss=models.masked_loss(settings["loss"]),
            jit_compile=settings["jit_compile"],
            steps_per_execution=STEPS_PER_EXECUTION,
        )

        logger.info(
            "%s: training %s on %d batches of %d x %d steps for up to %d epochs",
            job["name"], ", ".join(spec["type"] for spec in architecture["hidden_layers"]),
            train_batches.n_batches, shapes["batch_size"], shapes["timesteps"], settings["epochs"],
        )
        checkpoint = TrainingCheckpoint(job)
        epochs_before = len(checkpoint.history.get("loss", []))
        callbacks = _callbacks(job, validation_batches is not None)
        fit_started = time.time()
        model.fit(
            train_batches.dataset(n_features, target_shape, first_epoch=checkpoint.initial_epoch),
            validation_data=validation_batches.dataset(n_features, target_shape) if validation_batches else None,
            epochs=settings["epochs"],
            initial_epoch=checkpoint.initial_epoch,
            shuffle=False,
            verbose=0,
            callbacks=[*callbacks, checkpoint.callback(callbacks)],
        )
        fit_seconds = time.time() - fit_started

    # Keras's own history lacks the epochs run before an interruption.
    history = checkpoint.history
    # Early stopping restores the weights of the best epoch, which need not be the last one.
    stopping = next((c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)), None)
    kept_epoch = stopping.best_epoch + 1 if stopping is not None and stopping.best_weights is not None else len(history["loss"])
    final_loss = history["loss"][kept_epoch - 1]
    if not all(math.isfinite(v) for values in history.values() for v in values):
        raise TrainingError(f"{job['name']}: the loss was not finite during training; no model file was written")
    windows = train_batches.n_windows * (len(history["loss"]) - epochs_before)
    logger.info("%s: trained on %d windows in %.1f s (%.0f windows/s)", job["name"], windows, fit_seconds, windows / max(fit_seconds, 1e-9))

    weights_sha256 = models.weights_hash(model)
    metadata = {
        "architecture": architecture,
        "feature_names": reader.feature_names,
        "static_features": job["data"].get("static_features", []),
        "target_names": reader.target_names,
        "units": reader.units,
        "scalers": {"features": scalers[0].to_dict(), "targets": scalers[1].to_dict()},
        "shapes": shapes,
        "weight_layout": models.weight_layout(model),
        "weights_sha256": weights_sha256,
        "history": history,
        "kept_epoch": kept_epoch,
        "data": summary,
        "job": {key: value for key, value in job.items() if key != "source"},
        "spec_sha256": job["spec_sha256"],
        "provenance": provenance(job, started),
    }
    with atomic_output(job["output"]["model_file"]) as temporary:
        write_model_file(model, temporary, metadata)
    checkpoint.remove()

    seconds = time.time() - started
    logger.info(
        "%s: wrote %s (weights sha256 %s) after %d epochs, with the weights of epoch %d (loss %.4g)",
        job["name"], job["output"]["model_file"], weights_sha256[:12], len(history["loss"]), kept_epoch, final_loss,
    )
    return {
        "name": job["name"],
        "kind": "train",
        "output": job["output"]["model_file"],
        "weights_sha256": weights_sha256,
        "epochs": len(history["loss"]),
        "kept_epoch": kept_epoch,
        "loss": final_loss,
        "windows": windows,
        "fit_seconds": fit_seconds,
        "seconds": seconds,
    }
