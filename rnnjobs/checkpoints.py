"""Training checkpoints: an interrupted train job resumes after its last completed epoch and ends with the same weights.

Keras's ``BackupAndRestore`` callback (Keras 3.15) is not enough for that. It
saves the weights with ``save_weights``, which leaves out the seed generator
states that decide dropout masks. It rewrites its files in place, so a kill
while saving leaves a damaged checkpoint. It keeps neither the history of the
earlier epochs nor the state of ``EarlyStopping``. The checkpoint here keeps
all of them in one HDF5 file that :func:`rnnjobs.output.atomic_output`
replaces after every epoch.
"""

import json
import logging
import os
import shutil

import h5py
import numpy as np

from rnnjobs import __version__
from rnnjobs.output import atomic_output, remove_stale_temporaries
from rnnjobs.runtime import file_record
from rnnjobs.spec import output_path

logger = logging.getLogger(__name__)

FORMAT_NAME = "rnnjobs-checkpoint"
FORMAT_VERSION = 1
STATE_FILE = "state.h5"

# The attributes of keras.callbacks.EarlyStopping (Keras 3.15) that carry over
# from one epoch to the next; best_weights is stored as arrays beside them.
EARLY_STOPPING_STATE = ("wait", "best", "best_epoch", "stopped_epoch")


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model it should be restored into."""


def checkpoint_folder(output):
    """Return the checkpoint folder of a model file: the hidden folder ``.<name>.checkpoint`` beside it."""
    folder, name = os.path.split(os.path.abspath(output))
    return os.path.join(folder, f".{name}.checkpoint")


def remove_checkpoint(output):
    """Delete the checkpoint folder of ``output``, if there is one."""
    shutil.rmtree(checkpoint_folder(output), ignore_errors=True)


class TrainingCheckpoint:
    """The training state of one train job after its last completed epoch.

    The state file contains every variable of the training model (the weights
    and the seed generator states of dropout), every optimizer variable (such
    as Adam's moments and iteration count), the history of the completed
    epochs, the state of ``EarlyStopping``, and what it was made from: the
    job's spec hash, the size and modification time of its data file, and the
    rnnjobs version. A checkpoint made from anything else is deleted when the
    job starts, and training begins at the first epoch.

    Parameters
    ----------
    job : dict
        A normalized train job.

    Attributes
    ----------
    folder : str
        The checkpoint folder, see :func:`checkpoint_folder`.
    history : dict
        Loss and metric values of every completed epoch, those before the
        interruption included; filled during training.
    """

    def __init__(self, job):
        self.job = job
        self.folder = checkpoint_folder(output_path(job))
        self.path = os.path.join(self.folder, STATE_FILE)
        self.state = self._read()
        self.history = dict(self.state["history"]) if self.state else {}

    @property
    def initial_epoch(self):
        """The 0-based epoch that training starts at: 0 without a checkpoint.

        When early stopping had ended training before the interruption, this
        is the job's epoch count, so that no further epoch runs.
        """
        if self.state is None:
            return 0
        if self.state["stopped"]:
            return self.job["training"]["epochs"]
        return self.state["epoch"]

    def _origin(self):
        return {"spec_sha256": self.job["spec_sha256"], "data": file_record(self.job["data"]["file"]), "rnnjobs": __version__}

    def _read(self):
        if not os.path.isdir(self.folder):
            return None
        remove_stale_temporaries(self.path)
        name = self.job["name"]
        try:
            with h5py.File(self.path, "r") as h5file:
                if h5file.attrs.get("format") != FORMAT_NAME:
                    raise ValueError(f"not an rnnjobs checkpoint (format {h5file.attrs.get('format')!r})")
                state = {key: json.loads(h5file.attrs[key]) for key in ("origin", "epoch", "stopped", "history", "early_stopping")}
        except FileNotFoundError:
            self.remove()
            return None
        except (OSError, KeyError, ValueError) as err:
            logger.warning("%s: cannot read the checkpoint %s (%s); deleting it and training from the first epoch", name, self.path, err)
            self.remove()
            return None

        origin = self._origin()
        changed = [key for key in origin if state["origin"].get(key) != origin[key]]
        if changed:
            descriptions = {"spec_sha256": "the job spec", "data": f"the data file {self.job['data']['file']}", "rnnjobs": "the rnnjobs version"}
            logger.info(
                "%s: deleting the checkpoint %s because %s changed since it was written; training from the first epoch",
                name, self.folder, " and ".join(descriptions[key] for key in changed),
            )
            self.remove()
            return None
        logger.info("%s: resuming from the checkpoint %s after epoch %d of %d", name, self.folder, state["epoch"], self.job["training"]["epochs"])
        return state

    def callback(self, callbacks):
        """Return the Keras callback that restores this checkpoint when training begins and saves one after each epoch.

        Parameters
        ----------
        callbacks : list of keras.callbacks.Callback
            The job's other callbacks. Pass the returned callback to ``fit``
            after them, so that it saves the state of any ``EarlyStopping``
            among them after that has seen the epoch.
        """
        import keras

        checkpoint = self
        stoppers = [callback for callback in callbacks if isinstance(callback, keras.callbacks.EarlyStopping)]

        class SaveAndRestore(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                # EarlyStopping resets its state in its own on_train_begin, which runs before this one.
                if checkpoint.state is not None:
                    checkpoint._restore(self.model, stoppers)

            def on_epoch_end(self, epoch, logs=None):
                for key, value in (logs or {}).items():
                    checkpoint.history.setdefault(key, []).append(float(value))
                checkpoint._save(self.model, stoppers, epoch + 1)

        return SaveAndRestore()

    def _save(self, model, stoppers, epochs_done):
        # NOTE: this runs after every epoch. For an LSTM(20) on a local disk it took 6 to 20 ms
        # (measured once on a 2-core x86-64 VM), and a slow network file system may take longer.
        import keras

        os.makedirs(self.folder, exist_ok=True)
        with atomic_output(self.path) as temporary, h5py.File(temporary, "w") as h5file:
            attributes = {
                "origin": self._origin(),
                "epoch": epochs_done,
                "stopped": bool(model.stop_training),
                "history": self.history,
                "early_stopping": [{key: _plain(getattr(stopper, key)) for key in EARLY_STOPPING_STATE} for stopper in stoppers],
            }
            h5file.attrs["format"] = FORMAT_NAME
            h5file.attrs["format_version"] = FORMAT_VERSION
            for key, value in attributes.items():
                h5file.attrs[key] = json.dumps(value)
            _write_arrays(h5file, "model", [keras.ops.convert_to_numpy(variable) for variable in model.variables])
            _write_arrays(h5file, "optimizer", [keras.ops.convert_to_numpy(variable) for variable in model.optimizer.variables])
            for index, stopper in enumerate(stoppers):
                if stopper.best_weights is not None:
                    _write_arrays(h5file, f"early_stopping_{index}", stopper.best_weights)

    def _restore(self, model, stoppers):
        try:
            with h5py.File(self.path, "r") as h5file:
                _assign(model.variables, h5file["model"], "model")
                if not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                _assign(model.optimizer.variables, h5file["optimizer"], "optimizer")
                for index, stopper in enumerate(stoppers):
                    for key, value in self.state["early_stopping"][index].items():
                        setattr(stopper, key, value)
                    group = h5file.get(f"early_stopping_{index}")
                    stopper.best_weights = None if group is None else _read_arrays(group)
        except (CheckpointError, KeyError, IndexError) as err:
            self.remove()
            raise CheckpointError(
                f"{self.job['name']}: the checkpoint {self.folder} does not fit the model ({err}); "
                "it was deleted, so running the job again starts from the first epoch"
            ) from err

    def remove(self):
        """Delete the checkpoint folder, as after the model file is written."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _plain(value):
    """Return a JSON-ready copy of an EarlyStopping attribute, which may be a NumPy or Python number or None."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_arrays(h5file, name, arrays):
    group = h5file.create_group(name)
    for index, values in enumerate(arrays):
        group.create_dataset(str(index), data=np.asarray(values))


def _read_arrays(group):
    return [group[str(index)][()] for index in range(len(group))]


def _assign(variables, group, label):
    stored = _read_arrays(group)
    if len(stored) != len(variables):
        raise CheckpointError(f"{len(stored)} stored {label} variables, the model has {len(variables)}")
    for variable, values in zip(variables, stored):
        if tuple(values.shape) != tuple(variable.shape):
            raise CheckpointError(f"{label} variable {variable.path} has shape {tuple(variable.shape)}, the stored one {values.shape}")
        variable.assign(values)
