"""The model file: Keras weights plus everything needed to rebuild the model.

A model file is one HDF5 file whose name ends in ``.weights.h5``. Keras writes
the weights; rnnjobs adds the group ``/rnnjobs`` whose attributes are JSON text:
the architecture, feature and target names, scaler parameters, the weight
layout and its SHA-256, the training history and provenance. Nothing in it is
executed or unpickled when it is read.
"""

import json
import os

import h5py

from rnnjobs.data import DataError, open_hdf5

FORMAT_NAME = "rnnjobs-model"
FORMAT_VERSION = 1
METADATA_GROUP = "rnnjobs"
REQUIRED_KEYS = ("architecture", "feature_names", "target_names", "scalers", "weight_layout", "weights_sha256")


def write_model_file(model, path, metadata):
    """Save ``model``'s weights and ``metadata`` to ``path``, which must end in ``.weights.h5``.

    The caller makes the write atomic; see :func:`rnnjobs.output.atomic_output`.
    """
    model.save_weights(path)
    with h5py.File(path, "a") as h5file:
        group = h5file.require_group(METADATA_GROUP)
        group.attrs["format"] = FORMAT_NAME
        group.attrs["format_version"] = FORMAT_VERSION
        for key, value in metadata.items():
            group.attrs[key] = json.dumps(value, sort_keys=True, default=str)


def read_model_metadata(path):
    """Return the metadata stored in a model file.

    Raises
    ------
    DataError
        If the file is missing, is not HDF5 or was not written by rnnjobs.
    """
    with open_hdf5(path) as h5file:
        group = h5file.get(METADATA_GROUP)
        if group is None or group.attrs.get("format") != FORMAT_NAME:
            raise DataError(f"{path}: not an rnnjobs model file (no /{METADATA_GROUP} group); train one with 'rnnjobs train'")
        version = int(group.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise DataError(f"{path}: model file format {version} is newer than this rnnjobs reads ({FORMAT_VERSION}); upgrade rnnjobs")
        metadata = {}
        for key, value in group.attrs.items():
            if key in ("format", "format_version"):
                continue
            try:
                metadata[key] = json.loads(value)
            except (TypeError, json.JSONDecodeError) as err:
                raise DataError(f"{path}: metadata attribute {key!r} is not valid JSON; the file is damaged") from err
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise DataError(f"{path}: model file lacks {', '.join(missing)}; the file is damaged or incomplete")
    metadata["path"] = os.path.abspath(path)
    return metadata


def stored_weight_shapes(path):
    """Return the shapes of the weight arrays Keras stored in a model file, in file order.

    Keras 3 keeps each layer's variables as datasets under ``/layers``. Their
    order in the file follows Keras's own layer names alphabetically, not the
    order of the model, so callers compare the shapes as a multiset.
    """
    shapes = []
    with open_hdf5(path) as h5file:
        layers = h5file.get("layers")
        if layers is None:
            raise DataError(f"{path}: no Keras weights (no /layers group); the file is damaged or was not written by 'rnnjobs train'")

        def collect(name, item):
            if isinstance(item, h5py.Dataset):
                shapes.append(list(item.shape))

        layers.visititems(collect)
    return shapes


def load_model_weights(model, path, metadata):
    """Load the weights of a model file into ``model`` after checking their layout, then check their hash.

    Raises
    ------
    DataError
        If the loaded weights do not have the SHA-256 recorded at training,
        because the file was changed afterwards.
    """
    from rnnjobs.models import check_weight_layout, weights_hash

    check_weight_layout(metadata["weight_layout"], model, path)
    model.load_weights(path)
    recorded = metadata.get("weights_sha256")
    if recorded is not None and weights_hash(model) != recorded:
        raise DataError(
            f"{path}: the weights in the file do not match the SHA-256 recorded at training ({recorded[:12]}...); "
            "the file was changed after training, so train the model again"
        )
