"""Inspection: human-readable descriptions of jobs, models and output files."""

import contextlib
import hashlib
import io
import json
import os

import h5py
import numpy as np

from rnnjobs.data import DataError, check_sample_datasets, get_dataset, open_hdf5


def job_architecture(job):
    """Return the architecture a job trains or forecasts with, reading only shapes and metadata."""
    if job["kind"] == "forecast":
        from rnnjobs.modelfile import read_model_metadata

        metadata = read_model_metadata(job["model_file"])
        return metadata["architecture"], metadata["shapes"]
    data = job["data"]
    if data.get("layout") == "samples":
        with open_hdf5(data["file"]) as h5file:
            x_dataset, y_dataset = get_dataset(h5file, data["x"]), get_dataset(h5file, data.get("y", "y"))
            feature_names, target_names = check_sample_datasets(x_dataset, y_dataset, data)
        n_features, n_targets = len(feature_names), len(target_names)
    else:
        n_features = len(data["features"]) + len(data.get("static_features", []))
        n_targets = len(data["targets"])
    from rnnjobs.training import architecture_of

    return architecture_of(job, n_features, n_targets), job["shapes"]


def describe_job(job):
    """Return the summaries of a job's training and prediction models and their parameter counts."""
    from rnnjobs import models

    architecture, shapes = job_architecture(job)
    training = models.build_training_model(architecture, shapes["batch_size"], shapes["timesteps"], shapes["stateful"])
    prediction = models.build_prediction_model(architecture)
    out = io.StringIO()
    for model in (training, prediction):
        model.summary(print_fn=lambda line, *args, **kwargs: out.write(line + "\n"))
    counts = models.count_trainable(training), models.count_trainable(prediction)
    out.write(f"trainable parameters: training model {counts[0]}, prediction model {counts[1]}")
    out.write(" (equal)\n" if counts[0] == counts[1] else " (DIFFERENT: the weights cannot be shared)\n")
    return out.getvalue()


# Keras 3 saves a Functional model's weights under layers/<name>, where <name> is
# the snake_case class name with a per-class counter in model order (dense,
# dense_1, ...), and a recurrent layer's weights under layers/<name>/cell/vars.
# Checked with Keras 3.15.
_KERAS_LAYER_NAMES = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "simple_rnn", "Dense": "dense", "Dropout": "dropout"}
_ROW_BLOCK = 1024


def inspect_file(path):
    """Describe a model file or a forecast file as JSON data, reading it with h5py only.

    Returns
    -------
    dict
        ``kind`` (``"model"`` or ``"forecast"``), ``path``, ``bytes`` and the
        contents. For a model file, these are its ``metadata`` exactly as
        stored, the ``weights`` and a check of the weights hash. For a forecast
        file, they are its dimensions, variables with value summaries,
        coordinates, global attributes and a check of the model file it names.

    Raises
    ------
    DataError
        If the file is not HDF5 or was written by neither ``rnnjobs train`` nor ``rnnjobs forecast``.
    """
    from rnnjobs.modelfile import FORMAT_NAME, METADATA_GROUP

    with open_hdf5(path) as h5file:
        group = h5file.get(METADATA_GROUP)
        is_model = group is not None and _plain(group.attrs.get("format")) == FORMAT_NAME
        is_forecast = "model_weights_sha256" in h5file.attrs
        if not (is_model or is_forecast):
            names = []
            h5file.visititems(lambda key, item: names.append(key) if isinstance(item, h5py.Dataset) else None)
            raise DataError(
                f"{path}: neither an rnnjobs model file (no /{METADATA_GROUP} group) nor an rnnjobs forecast "
                f"file (no model_weights_sha256 attribute); datasets in the file: {', '.join(names[:10]) or 'none'}"
            )
    info = {"kind": "model" if is_model else "forecast", "path": os.path.abspath(path), "bytes": os.path.getsize(path)}
    info.update(_inspect_model(path) if is_model else _inspect_forecast(path))
    return info


def _inspect_model(path):
    from rnnjobs.modelfile import read_model_metadata

    metadata = read_model_metadata(path)
    metadata.pop("path")
    layout = metadata["weight_layout"]
    with open_hdf5(path) as h5file:
        version = _plain(h5file["rnnjobs"].attrs["format_version"])
        arrays = _stored_weights(h5file, metadata["architecture"], layout)
        weights = [
            {"name": name, "shape": list(shape), "dtype": None if arrays is None else str(arrays[k].dtype)}
            for k, (name, shape) in enumerate(layout)
        ]
    matches = None if arrays is None else weights_sha256(arrays) == metadata["weights_sha256"]
    if matches is None:
        check = "not checked: the weights in the file are not in the layout that Keras 3 writes for this architecture"
    elif matches:
        check = "matches the weights in the file"
    else:
        check = "DIFFERS from the weights in the file: the file was changed after training"
    return {
        "format_version": version,
        "metadata": metadata,
        "weights": weights,
        "parameters": int(sum(np.prod(shape, dtype=np.int64) for _, shape in layout)),
        "weights_sha256_check": check,
    }


def stored_weights_match(path, metadata):
    """Return whether the weights stored in a model file have the recorded SHA-256, or None if they cannot be read in model order."""
    with open_hdf5(path) as h5file:
        arrays = _stored_weights(h5file, metadata["architecture"], metadata["weight_layout"])
    if arrays is None:
        return None
    return weights_sha256(arrays) == metadata["weights_sha256"]


def weights_sha256(arrays):
    """Return the SHA-256 of weight arrays, hashed as :func:`rnnjobs.models.weights_hash` hashes a model's weights."""
    digest = hashlib.sha256()
    for values in arrays:
        values = np.ascontiguousarray(values)
        digest.update(f"{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def _stored_weights(h5file, architecture, layout):
    """Return the weight arrays of a Keras 3 weights file in the model's order, or None if the layout differs."""
    counters = {}
    arrays = []
    for spec in [*architecture["hidden_layers"], {"type": "Dense"}]:
        base = _KERAS_LAYER_NAMES.get(spec["type"])
        if base is None:
            return None
        count = counters.get(base, 0)
        counters[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        group = h5file.get(f"layers/{name}/cell/vars" if spec["type"] in ("LSTM", "GRU", "SimpleRNN") else f"layers/{name}/vars")
        if group is None:
            return None
        arrays.extend(group[key][()] for key in sorted(group, key=int))
    shapes_match = len(arrays) == len(layout) and all(list(array.shape) == list(shape) for array, (_, shape) in zip(arrays, layout))
    return arrays if shapes_match else None


def _inspect_forecast(path):
    with open_hdf5(path) as h5file:
        attributes = {key: _plain(value) for key, value in h5file.attrs.items() if not key.startswith("_")}
        for key in ("job", "provenance"):
            if isinstance(attributes.get(key), str):
                with contextlib.suppress(json.JSONDecodeError):
                    attributes[key] = json.loads(attributes[key])

        dimensions, coordinates, variables = {}, {}, {}
        for name, item in h5file.items():
            if not isinstance(item, h5py.Dataset):
                continue
            if item.ndim == 1 and _plain(item.attrs.get("CLASS")) == "DIMENSION_SCALE":
                dimensions[name] = int(item.shape[0])
                coordinates[name] = _describe_coordinate(item)
            else:
                variables[name] = _describe_variable(item)

    model = {"file": attributes.get("model_file"), "weights_sha256": attributes.get("model_weights_sha256")}
    model["check"] = _check_model_file(model["file"], model["weights_sha256"])
    return {"dimensions": dimensions, "coordinates": coordinates, "variables": variables, "attributes": attributes, "model": model}


def _describe_coordinate(dataset):
    values = dataset[()]
    attributes = {key: _plain(value) for key, value in dataset.attrs.items() if key in ("units", "calendar", "long_name", "standard_name", "cf_role")}
    described = {"size": len(values), "dtype": str(dataset.dtype), "attributes": attributes}
    if len(values):
        first, last = _plain(values[0]), _plain(values[-1])
        described.update(first=first, last=last)
        if "units" in attributes:
            from rnnjobs.timeaxis import format_time

            described.update(
                first_time=format_time(values, 0, attributes["units"], attributes.get("calendar")),
                last_time=format_time(values, len(values) - 1, attributes["units"], attributes.get("calendar")),
            )
    return described


def _describe_variable(dataset):
    dimensions = []
    for axis in range(dataset.ndim):
        scales = dataset.dims[axis]
        dimensions.append(scales[0].name.strip("/") if len(scales) else f"axis{axis}")
    attributes = {key: _plain(value) for key, value in dataset.attrs.items() if key in ("units", "long_name", "standard_name")}
    described = {"dimensions": dimensions, "shape": list(dataset.shape), "dtype": str(dataset.dtype), "attributes": attributes}
    if dataset.dtype.kind == "f":
        described["summary"] = _summarize_values(dataset)
    return described


def _summarize_values(dataset):
    """Return the minimum, mean and maximum of the finite values and the count of the others, read in row blocks."""
    total, count, minimum, maximum, non_finite = 0.0, 0, np.inf, -np.inf, 0
    for first in range(0, dataset.shape[0] if dataset.ndim else 1, _ROW_BLOCK):
        block = np.asarray(dataset[first:first + _ROW_BLOCK] if dataset.ndim else dataset[()], dtype=np.float64)
        finite = block[np.isfinite(block)]
        non_finite += block.size - finite.size
        if finite.size:
            total += float(finite.sum())
            count += finite.size
            minimum, maximum = min(minimum, float(finite.min())), max(maximum, float(finite.max()))
    if not count:
        return {"min": None, "mean": None, "max": None, "non_finite": non_finite}
    return {"min": minimum, "mean": total / count, "max": maximum, "non_finite": non_finite}


def _check_model_file(model_file, expected_sha256):
    from rnnjobs.modelfile import read_model_metadata

    if not model_file:
        return "not checked: the forecast file names no model file"
    if not os.path.exists(model_file):
        return "not found"
    try:
        recorded = read_model_metadata(model_file)["weights_sha256"]
    except DataError as err:
        return f"unreadable: {err}"
    if recorded == expected_sha256:
        return "found, weights sha256 matches"
    return f"found, but its weights sha256 is {recorded}: the model was retrained after this forecast"


def _plain(value):
    """Convert an HDF5 attribute value to JSON data."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return _plain(value.item()) if value.size == 1 else [_plain(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def format_inspection(info):
    """Return the result of :func:`inspect_file` as text."""
    lines = _format_model(info) if info["kind"] == "model" else _format_forecast(info)
    return "\n".join(lines) + "\n"


def _format_model(info):
    metadata = info["metadata"]
    architecture = metadata["architecture"]
    units = metadata.get("units", {})
    layers = [_layer_text(spec) for spec in architecture["hidden_layers"]]
    layers.append(f"Dense({architecture['n_targets']}, {architecture.get('output_activation', 'linear')}) output")
    shapes = metadata.get("shapes", {})
    lines = [
        f"model file: {info['path']} ({info['bytes']:,} bytes, rnnjobs model format {info['format_version']})",
        f"architecture: {' -> '.join(layers)}",
        f"features: {_names_with_units(metadata['feature_names'], units)}",
        f"targets: {_names_with_units(metadata['target_names'], units)}",
        f"training shapes: {', '.join(f'{key} {value}' for key, value in shapes.items())}",
        f"parameters: {info['parameters']:,} in {len(info['weights'])} weight arrays",
    ]
    lines.extend(f"  {weight['name']}  {tuple(weight['shape'])}" for weight in info["weights"])
    lines.append(f"weights sha256: {metadata['weights_sha256']} ({info['weights_sha256_check']})")
    lines.append("scalers:")
    for part, names in (("features", metadata["feature_names"]), ("targets", metadata["target_names"])):
        scaler = metadata["scalers"][part]
        pairs = "; ".join(f"{name} offset {offset:.4g} scale {scale:.4g}" for name, offset, scale in zip(names, scaler["offset"], scaler["scale"]))
        lines.append(f"  {part} ({scaler['method']}): {pairs}")
    lines.extend(_history_lines(metadata.get("history", {})))
    lines.extend(_data_lines(metadata.get("data", {})))
    lines.extend(_provenance_lines(metadata.get("provenance", {})))
    return lines


def _layer_text(spec):
    if spec["type"] == "Dropout":
        return f"Dropout({spec['rate']})"
    activation = f", {spec['activation']}" if "activation" in spec else ""
    return f"{spec['type']}({spec['units']}{activation})"


def _names_with_units(names, units):
    return ", ".join(f"{name} ({units[name]})" if name in units else name for name in names)


def _history_lines(history):
    if not history:
        return ["training history: none recorded"]
    epochs = len(next(iter(history.values())))
    lines = [f"training history: {epochs} epochs"]
    for key, values in history.items():
        best = int(np.argmin(values))
        lines.append(f"  {key}: first {values[0]:.4g}, last {values[-1]:.4g}, minimum {values[best]:.4g} at epoch {best + 1}")
    return lines


def _data_lines(summary):
    if not summary:
        return []
    text = f"training data: {summary.get('file')}, {summary.get('layout')} layout"
    if summary.get("layout") == "series":
        time = summary.get("time", {})
        dim = summary.get("location_dim", "location")
        text += (
            f", {len(summary.get('train_locations', []))} training and {len(summary.get('validation_locations', []))} "
            f"validation {dim}s, time indices {time.get('start')} to {time.get('stop', 0) - 1}"
        )
    else:
        text += f", {summary.get('samples')} samples of which {summary.get('validation_samples')} for validation"
    return [f"{text}, {summary.get('masked_targets', 0)} masked targets"]


def _provenance_lines(provenance):
    if not provenance:
        return ["provenance: none recorded"]
    versions = ", ".join(f"{name} {version}" for name, version in provenance.get("versions", {}).items())
    return [
        f"provenance: job file {provenance.get('job_file')} (sha256 {provenance.get('job_file_sha256')})",
        f"  spec sha256 {provenance.get('spec_sha256')}, host {provenance.get('host')}, started {provenance.get('started')}, finished {provenance.get('finished')}",
        f"  versions: {versions}",
    ]


def _format_forecast(info):
    attributes = info["attributes"]
    lines = [
        f"forecast file: {info['path']} ({info['bytes']:,} bytes, {attributes.get('Conventions', 'no Conventions')} "
        f"{attributes.get('featureType', '')})".rstrip(),
        f"dimensions: {', '.join(f'{name} {size}' for name, size in info['dimensions'].items())}",
        "variables:",
    ]
    for name, variable in info["variables"].items():
        units = variable["attributes"].get("units")
        text = f"  {name} ({', '.join(variable['dimensions'])}) {variable['dtype']}" + (f" [{units}]" if units else "")
        summary = variable.get("summary")
        if summary and summary["mean"] is not None:
            text += f": min {summary['min']:.4g}, mean {summary['mean']:.4g}, max {summary['max']:.4g}"
        if summary:
            text += f", {summary['non_finite']} non-finite"
        lines.append(text)

    lines.append("coordinates:")
    for name, coordinate in info["coordinates"].items():
        text = f"  {name}: {coordinate['size']} values"
        if "first" in coordinate:
            text += f", {coordinate['first']} to {coordinate['last']}"
        if "first_time" in coordinate:
            text += f" ({coordinate['first_time']} to {coordinate['last_time']}, {coordinate['attributes']['units']})"
        lines.append(text)

    model = info["model"]
    lines.append(f"model file: {model['file']} ({model['check']})")
    lines.append(f"model weights sha256: {model['weights_sha256']}")
    lines.append(f"input file: {attributes.get('input_file')}")
    lines.append(f"spinup steps: {attributes.get('spinup_steps')}")

    job = attributes.get("job")
    if isinstance(job, dict):
        lines.append(f"job: {job.get('name')}, spec sha256 {attributes.get('spec_sha256')}")
    provenance = attributes.get("provenance")
    lines.extend(_provenance_lines(provenance if isinstance(provenance, dict) else {}))
    return lines
