"""Job files: the JSON Schema, loading, defaults and semantic checks.

This module imports neither TensorFlow nor h5py, so that validating a job file
is fast. A loaded job is a plain ``dict`` (JSON data with absolute paths and
defaults filled in) that can be sent to a worker process as it is.
"""

import copy
import difflib
import hashlib
import json
import os
from pathlib import Path

import jsonschema

from rnnjobs.sweep import SWEEP_SCHEMA, SweepError, expand_sweep

JOB_KINDS = ("train", "forecast")
RECURRENT_LAYERS = ("SimpleRNN", "LSTM", "GRU")
LAYER_TYPES = RECURRENT_LAYERS + ("Dense", "Dropout")
LOSSES = ("mse", "mae")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
SCALERS = ("standard", "minmax", "none")
REMAINDER_POLICIES = ("error", "drop", "pad")
MISSING_FEATURE_POLICIES = ("error", "ffill", "zero")
LAYOUTS = ("series", "samples")
SERIES_AXIS_ORDERS = ("location,time", "time,location")
SAMPLES_AXIS_ORDERS = ("samples,timesteps,features", "features,timesteps,samples")
WEIGHTS_SUFFIX = ".weights.h5"
# Suffixes that users give Keras weight files by habit, replaced in the suggested name.
_HABITUAL_SUFFIXES = (".h5", ".hdf5", ".hdf", ".keras", ".weights")

_POSITIVE_INT = {"type": "integer", "minimum": 1}
_NAME_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": True}
_ACTIVATION = {"type": "string", "minLength": 1}
_FRACTION = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}

_LOCATIONS = {
    "description": (
        "Locations to use: a list of ids from the location coordinate, or an index "
        "range {start, stop, step}. All locations when absent."
    ),
    # Array keywords apply to lists only and object keywords to objects only, so
    # one schema covers both forms and errors point at the field that is wrong.
    "type": ["array", "object"],
    "items": {"type": ["string", "integer"]},
    "minItems": 1,
    "properties": {
        "start": {"type": "integer", "minimum": 0},
        "stop": {"type": "integer", "minimum": 0},
        "step": _POSITIVE_INT,
    },
    "additionalProperties": False,
}

_TIME_RANGE = {
    "description": "Time index range [start, stop) along the time axis. The whole series when absent.",
    "type": "object",
    "properties": {
        "start": {"type": "integer", "minimum": 0},
        "stop": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}

_MISSING_FEATURES = {
    "enum": list(MISSING_FEATURE_POLICIES),
    "description": "What to do with NaN, infinite or out-of-range feature values: reject, carry the last valid value forward, or use zero.",
}

_VALID_RANGE = {
    "description": (
        "Per variable, the [min, max] of plausible values. Targets outside it are "
        "masked in the loss, features outside it count as missing."
    ),
    "type": "object",
    "additionalProperties": {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 2,
        "maxItems": 2,
    },
}

_SERIES_DATA = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "minLength": 1, "description": "HDF5 file, relative to the job file."},
        "layout": {"enum": list(LAYOUTS)},
        "features": {**_NAME_LIST, "description": "Datasets shaped (location, time), one per feature."},
        "targets": {**_NAME_LIST, "description": "Datasets shaped (location, time), one per target."},
        "static_features": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "description": "Datasets shaped (location,), such as elevation, given to the model at every step.",
        },
        "locations": _LOCATIONS,
        "exclude_locations": {"type": "array", "items": {"type": ["string", "integer"]}},
        "time": _TIME_RANGE,
        "valid_range": _VALID_RANGE,
        "location_coordinate": {"type": "string", "description": "Dataset of location ids."},
        "time_coordinate": {"type": "string", "description": "Dataset of time values."},
        "axis_order": {
            "enum": list(SERIES_AXIS_ORDERS),
            "description": "Axis order of the 2-D datasets; 'time,location' for column-major writers.",
        },
        "missing_features": _MISSING_FEATURES,
    },
    "required": ["file", "features"],
    "additionalProperties": False,
}

_SAMPLES_DATA = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "minLength": 1},
        "layout": {"const": "samples"},
        "x": {"type": "string", "description": "Dataset X shaped (samples, timesteps, features)."},
        "y": {
            "type": "string",
            "description": "Dataset y shaped (samples, timesteps, targets) or (samples, targets).",
        },
        "features": {**_NAME_LIST, "description": "Names of the features in X."},
        "targets": {**_NAME_LIST, "description": "Names of the targets in y."},
        "valid_range": _VALID_RANGE,
        "missing_features": _MISSING_FEATURES,
        "axis_order": {
            "enum": list(SAMPLES_AXIS_ORDERS),
            "description": (
                "Axis order of X; 'features,timesteps,samples' for column-major writers, "
                "which also reverses the axes of y."
            ),
        },
    },
    "required": ["file", "layout", "x"],
    "additionalProperties": False,
}


def _layer_schema(layer_type, properties, required=()):
    return {
        "if": {"properties": {"type": {"const": layer_type}}, "required": ["type"]},
        "then": {
            "properties": {"type": True, **properties},
            "required": list(required),
            "additionalProperties": False,
        },
    }


_RECURRENT_PROPERTIES = {
    "units": _POSITIVE_INT,
    "activation": _ACTIVATION,
    "recurrent_activation": _ACTIVATION,
    "dropout": _FRACTION,
    "recurrent_dropout": _FRACTION,
}

_HIDDEN_LAYER = {
    "type": "object",
    "properties": {"type": {"enum": list(LAYER_TYPES)}},
    "required": ["type"],
    "allOf": [
        _layer_schema("SimpleRNN", {k: v for k, v in _RECURRENT_PROPERTIES.items() if k != "recurrent_activation"}, ["units"]),
        _layer_schema("LSTM", _RECURRENT_PROPERTIES, ["units"]),
        _layer_schema("GRU", _RECURRENT_PROPERTIES, ["units"]),
        _layer_schema("Dense", {"units": _POSITIVE_INT, "activation": _ACTIVATION}, ["units"]),
        _layer_schema("Dropout", {"rate": _FRACTION}, ["rate"]),
    ],
}

_EDITOR_SCHEMA = {"type": "string", "description": "Path or URL of this schema, for editors; ignored by rnnjobs."}

_TRAIN_JOB = {
    "type": "object",
    "properties": {
        "$schema": _EDITOR_SCHEMA,
        "kind": {"const": "train"},
        "name": {"type": "string", "minLength": 1},
        "data": {
            "type": "object",
            "if": {"properties": {"layout": {"const": "samples"}}, "required": ["layout"]},
            "then": _SAMPLES_DATA,
            "else": _SERIES_DATA,
        },
        "model": {
            "type": "object",
            "properties": {
                "hidden_layers": {"type": "array", "items": _HIDDEN_LAYER, "minItems": 1},
                "output_activation": _ACTIVATION,
            },
            "required": ["hidden_layers"],
            "additionalProperties": False,
        },
        "shapes": {
            "type": "object",
            "properties": {
                "batch_size": _POSITIVE_INT,
                "timesteps": _POSITIVE_INT,
                "stateful": {"type": "boolean"},
                "return_sequences": {
                    "type": "boolean",
                    "description": "Train on a target at every step (true) or on the last step only (false).",
                },
                "stride": {**_POSITIVE_INT, "description": "Steps between window starts (stateless only)."},
            },
            "required": ["batch_size", "timesteps"],
            "additionalProperties": False,
        },
        "training": {
            "type": "object",
            "properties": {
                "epochs": _POSITIVE_INT,
                "optimizer": {"enum": list(OPTIMIZERS)},
                "learning_rate": {"type": "number", "exclusiveMinimum": 0},
                "loss": {"enum": list(LOSSES)},
                "seed": {"type": "integer", "minimum": 0},
                "validation_split": _FRACTION,
                "early_stopping": {
                    "type": ["object", "null"],
                    "properties": {
                        "patience": {"type": "integer", "minimum": 0},
                        "min_delta": {"type": "number", "minimum": 0},
                    },
                    "additionalProperties": False,
                },
                "remainder": {
                    "enum": list(REMAINDER_POLICIES),
                    "description": "Samples or locations that do not fill a whole batch: reject, drop or pad with masked rows.",
                },
                "jit_compile": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "scaling": {
            "type": "object",
            "properties": {"features": {"enum": list(SCALERS)}, "targets": {"enum": list(SCALERS)}},
            "additionalProperties": False,
        },
        "output": {
            "type": "object",
            "properties": {"model_file": {"type": "string", "minLength": 1}},
            "required": ["model_file"],
            "additionalProperties": False,
        },
        "sweep": SWEEP_SCHEMA,
    },
    "required": ["kind", "data", "model", "shapes", "output"],
    "additionalProperties": False,
}

_FORECAST_JOB = {
    "type": "object",
    "properties": {
        "$schema": _EDITOR_SCHEMA,
        "kind": {"const": "forecast"},
        "name": {"type": "string", "minLength": 1},
        "model_file": {"type": "string", "minLength": 1, "description": "Model file written by a train job."},
        "data": {
            **_SERIES_DATA,
            "required": ["file"],
            "properties": {
                **_SERIES_DATA["properties"],
                "layout": {"const": "series", "description": "Forecasts read the series layout only."},
                "features": {**_NAME_LIST, "description": "Feature datasets; the model file's feature names when absent."},
            },
        },
        "spinup": {
            "type": "integer",
            "minimum": 0,
            "description": "Steps run to warm up the RNN state and left out of the output.",
        },
        "chunks": {
            "type": "object",
            "properties": {"locations": _POSITIVE_INT, "time": _POSITIVE_INT},
            "additionalProperties": False,
        },
        "bias_correction": {
            "type": "object",
            "description": (
                "Add to each location's forecast the mean of observed minus forecast over a period "
                "with observations, such as the hours before the forecast start."
            ),
            "properties": {
                "observed": {**_NAME_LIST, "description": "Datasets of observations, one per target; the target names when absent."},
                "time": {**_TIME_RANGE, "required": ["start", "stop"]},
                "valid_range": _VALID_RANGE,
            },
            "required": ["time"],
            "additionalProperties": False,
        },
        "output": {
            "type": "object",
            "properties": {"file": {"type": "string", "minLength": 1}},
            "required": ["file"],
            "additionalProperties": False,
        },
        "sweep": SWEEP_SCHEMA,
    },
    "required": ["kind", "model_file", "data", "output"],
    "additionalProperties": False,
}

JOB_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://rnnjobs.invalid/job.schema.json",
    "title": "rnnjobs job file",
    "type": "object",
    "properties": {"$schema": _EDITOR_SCHEMA, "kind": {"enum": list(JOB_KINDS)}},
    "required": ["kind"],
    "allOf": [
        {"if": {"properties": {"kind": {"const": "train"}}, "required": ["kind"]}, "then": _TRAIN_JOB},
        {"if": {"properties": {"kind": {"const": "forecast"}}, "required": ["kind"]}, "then": _FORECAST_JOB},
    ],
}

TRAIN_DEFAULTS = {
    "model": {"output_activation": "linear"},
    "shapes": {"stateful": False, "return_sequences": True, "stride": 1},
    "training": {
        "epochs": 10,
        "optimizer": "adam",
        "learning_rate": 0.001,
        "loss": "mse",
        "seed": 0,
        "validation_split": 0.0,
        "early_stopping": None,
        "remainder": None,
        "jit_compile": True,
    },
    "scaling": {"features": "standard", "targets": "standard"},
}

# A forecast keeps each layer's output for one chunk: for an LSTM(20), 80 bytes
# per location-step, or 42 MB for the default chunk of 1024 x 512.
FORECAST_DEFAULTS = {"spinup": 0, "chunks": {"locations": 1024, "time": 512}}

DATA_DEFAULTS = {
    "series": {"layout": "series", "valid_range": {}, "axis_order": "location,time", "missing_features": "error", "exclude_locations": []},
    "samples": {"valid_range": {}, "missing_features": "error", "axis_order": "samples,timesteps,features"},
}


class JobError(ValueError):
    """Error in a job file: the file and every problem found, each with its field path.

    Parameters
    ----------
    source : str
        Path of the job file, or a label for a job given as a dict.
    problems : list of str
        One message per problem, each starting with the field path.
    """

    def __init__(self, source, problems):
        self.source = str(source)
        self.problems = list(problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"invalid job file {self.source}:\n{lines}")


def field_path(parts):
    """Format a JSON path such as ``("model", "hidden_layers", 1, "units")`` as ``model.hidden_layers[1].units``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a JSON object",
    "array": "a list",
    "null": "null",
}


def _expected_value(schema):
    """Describe in words the values that ``schema`` accepts, such as ``a positive integer``."""
    if "enum" in schema:
        return "one of " + ", ".join(repr(value) for value in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    types = schema.get("type")
    if isinstance(types, list):
        return " or ".join(_TYPE_NAMES.get(name, name) for name in types)
    if types == "integer" and schema.get("minimum") == 1:
        return "a positive integer"
    if types == "integer" and schema.get("minimum") == 0:
        return "a non-negative integer"
    if types in ("integer", "number"):
        return _TYPE_NAMES[types] + _bounds_text(schema)
    if types == "string" and schema.get("minLength"):
        return "a non-empty string"
    return _TYPE_NAMES.get(types, "a valid value")


def _bounds_text(schema):
    low_inclusive, low_exclusive = schema.get("minimum"), schema.get("exclusiveMinimum")
    high_inclusive, high_exclusive = schema.get("maximum"), schema.get("exclusiveMaximum")
    low = low_inclusive if low_inclusive is not None else low_exclusive
    high = high_inclusive if high_inclusive is not None else high_exclusive
    if low is not None and high is not None:
        opening = "[" if low_inclusive is not None else "("
        closing = "]" if high_inclusive is not None else ")"
        return f" in {opening}{low}, {high}{closing}"
    if low is not None:
        return f" >= {low}" if low_inclusive is not None else f" greater than {low}"
    if high is not None:
        return f" <= {high}" if high_inclusive is not None else f" less than {high}"
    return ""


def _close_match(value, allowed):
    # Compare in lower case, so that 'FM' finds 'fm'.
    by_lower = {str(option).lower(): option for option in allowed}
    matches = difflib.get_close_matches(str(value).lower(), list(by_lower), n=1)
    return f" (did you mean {by_lower[matches[0]]!r}?)" if matches else ""


def _describe_schema_error(error):
    """Return ``(path, message)`` pairs for a jsonschema error, each message starting with the field path."""
    parts = list(error.absolute_path)
    path = field_path(parts)
    value = error.instance
    schema = error.schema
    keyword = error.validator

    if keyword == "required":
        missing = [name for name in error.validator_value if isinstance(value, dict) and name not in value]
        return [([*parts, name], f"{field_path([*parts, name])}: required field is missing") for name in missing]
    if keyword == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        return [
            (
                [*parts, name],
                f"{field_path([*parts, name])}: unknown field{_close_match(name, allowed)}; "
                f"allowed fields: {', '.join(allowed)}",
            )
            for name in sorted(set(value) - set(allowed))
        ]
    if keyword == "enum":
        return [(parts, f"{path}: got {value!r}, expected {_expected_value(schema)}{_close_match(value, error.validator_value)}")]
    if keyword in ("type", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength"):
        return [(parts, f"{path}: must be {_expected_value(schema)}, got {value!r}")]
    if keyword == "minItems":
        return [(parts, f"{path}: must have at least {error.validator_value} item(s), got {len(value)}")]
    if keyword == "maxItems":
        return [(parts, f"{path}: must have at most {error.validator_value} item(s), got {len(value)}")]
    if keyword == "uniqueItems":
        repeated = sorted({item for item in value if value.count(item) > 1}, key=str)
        return [(parts, f"{path}: each name may appear once, got {', '.join(map(repr, repeated))} more than once")]
    return [(parts, f"{path}: {error.message}")]


def _path_order(item):
    # Sort list indices as numbers, so that [2] comes before [10].
    return [(isinstance(part, str), part) for part in item[0]]


def schema_problems(job):
    """Return one message per JSON Schema violation of ``job``, ordered by field path."""
    validator = jsonschema.Draft202012Validator(JOB_SCHEMA)
    described = [item for error in validator.iter_errors(job) for item in _describe_schema_error(error)]
    problems = []
    for _, message in sorted(described, key=_path_order):
        if message not in problems:
            problems.append(message)
    return problems


def _merge_defaults(values, defaults):
    merged = copy.deepcopy(defaults)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_defaults(value, merged[key])
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _resolve(path, folder):
    return os.path.normpath(os.path.join(folder, os.path.expanduser(path)))


def normalize_job(raw, source="<dict>", folder="."):
    """Validate a job given as a dict and return it with defaults and absolute paths.

    Parameters
    ----------
    raw : dict
        The job as read from JSON.
    source : str, default="<dict>"
        Name used in error messages, normally the job file path.
    folder : str, default="."
        Folder that relative paths in the job are resolved against.

    Returns
    -------
    dict
        The job with defaults filled in, a ``name``, ``source`` and ``spec_sha256``.

    Raises
    ------
    JobError
        With every schema and semantic problem found.
    """
    if not isinstance(raw, dict):
        raise JobError(source, [f"(top level): expected a JSON object, got {type(raw).__name__}"])
    problems = schema_problems(raw)
    if problems:
        raise JobError(source, problems + _checkable_semantic_problems(raw, source, folder))
    if "sweep" in raw:
        raise JobError(source, ["sweep: a job with a sweep is several jobs; expand it with rnnjobs.sweep.expand_sweep or load its file with load_jobs"])

    job = _fill_defaults(raw, source, folder)
    problems = semantic_problems(job)
    if problems:
        raise JobError(source, problems)
    return job


def _fill_defaults(raw, source, folder):
    if raw["kind"] == "train":
        job = _merge_defaults(raw, TRAIN_DEFAULTS)
        layout = raw["data"].get("layout", "series")
        job["data"] = _merge_defaults(job["data"], DATA_DEFAULTS[layout])
        job["output"]["model_file"] = _resolve(job["output"]["model_file"], folder)
        if job["training"]["remainder"] is None:
            job["training"]["remainder"] = "error" if job["shapes"]["stateful"] else "pad"
    else:
        job = _merge_defaults(raw, FORECAST_DEFAULTS)
        job["data"] = _merge_defaults(job["data"], DATA_DEFAULTS["series"])
        job["model_file"] = _resolve(job["model_file"], folder)
        job["output"]["file"] = _resolve(job["output"]["file"], folder)
    job["data"]["file"] = _resolve(job["data"]["file"], folder)
    job.pop("$schema", None)

    stem = Path(source).name.removesuffix(".json") if source != "<dict>" else job["kind"]
    job.setdefault("name", stem)
    job["source"] = str(source)
    job["spec_sha256"] = spec_hash(job)
    return job


def _checkable_semantic_problems(raw, source, folder):
    """Return the semantic problems of a job with schema errors, from the checks its values allow.

    A job with a misspelt field should still get its model file name checked
    in the same report. So each check runs on its own, and a check that fails
    on an invalid value is skipped, because a schema error already names it.
    """
    try:
        job = _fill_defaults(raw, source, folder)
    except (KeyError, TypeError, AttributeError, ValueError):
        return []
    checks = (_train_problems,) if job["kind"] == "train" else (_forecast_problems,)
    problems = []
    for check in (*checks, _data_problems):
        try:
            problems.extend(check(job))
        except (KeyError, TypeError, AttributeError, ValueError):
            continue
    return problems


def spec_hash(job):
    """Return the SHA-256 of a job's settings, which decides whether an output is up to date."""
    settings = {key: value for key, value in job.items() if key not in ("source", "spec_sha256", "name")}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def suggest_model_file_name(path):
    """Return ``path`` with a habitual weights suffix (``.h5``, ``.hdf5``...) replaced by ``.weights.h5``."""
    stem = path
    for suffix in _HABITUAL_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem + WEIGHTS_SUFFIX


def semantic_problems(job):
    """Return the problems of a normalized job that the JSON Schema cannot express."""
    if job["kind"] == "train":
        return _train_problems(job) + _data_problems(job)
    return _forecast_problems(job) + _data_problems(job)


def _train_problems(job):
    problems = []
    model_file = job["output"]["model_file"]
    if not model_file.endswith(WEIGHTS_SUFFIX):
        suggestion = os.path.basename(suggest_model_file_name(model_file))
        problems.append(
            f"output.model_file: Keras 3 saves weights only to names ending in "
            f"{WEIGHTS_SUFFIX!r}, got {os.path.basename(model_file)!r}; use {suggestion!r}"
        )

    data, shapes = job["data"], job["shapes"]
    if data["layout"] == "series" and not data.get("targets"):
        problems.append("data.targets: required for a train job in the series layout: name at least one target dataset")

    layers = job["model"]["hidden_layers"]
    if not shapes["return_sequences"] and not any(layer["type"] in RECURRENT_LAYERS for layer in layers):
        problems.append(
            "shapes.return_sequences: false needs a recurrent layer (SimpleRNN, LSTM or GRU) in "
            "model.hidden_layers, whose last step is the output; add one or set return_sequences to true"
        )
    if shapes["stateful"] and shapes["stride"] != 1:
        problems.append(
            f"shapes.stride: {shapes['stride']} applies to stateless training only; stateful batches "
            "continue each series without overlap, so remove stride or set shapes.stateful to false"
        )
    if shapes["stateful"] and job["training"]["remainder"] == "pad":
        problems.append("training.remainder: 'pad' is not supported for stateful training; use 'error' or 'drop'")

    time_range = data.get("time", {})
    if "stop" in time_range and data["layout"] == "series":
        length = time_range["stop"] - time_range.get("start", 0)
        if length > 0 and shapes["timesteps"] > length:
            problems.append(
                f"shapes.timesteps: {shapes['timesteps']} is longer than the {length} steps that data.time selects"
            )
    return problems


def _forecast_problems(job):
    problems = []
    data = job["data"]
    if data.get("targets"):
        problems.append("data.targets: a forecast job takes no targets; the model file names them")
    time_range = data.get("time", {})
    if "stop" in time_range:
        length = time_range["stop"] - time_range.get("start", 0)
        if 0 < length <= job["spinup"]:
            problems.append(f"spinup: {job['spinup']} steps leave nothing of the {length} steps that data.time selects")
    if os.path.realpath(job["output"]["file"]) == os.path.realpath(job["model_file"]):
        problems.append("output.file: is the model file the job reads; choose another output file")

    correction = job.get("bias_correction")
    if correction is not None:
        start, stop = correction["time"]["start"], correction["time"]["stop"]
        first, last = time_range.get("start", 0), time_range.get("stop")
        if stop <= start:
            problems.append(f"bias_correction.time: stop {stop} must be greater than start {start}")
        elif start < first or (last is not None and stop > last):
            selected = f"[{first}, {last})" if last is not None else f"from {first} on"
            problems.append(
                f"bias_correction.time: [{start}, {stop}) must lie within the steps that data.time selects ({selected})"
            )
        for name, (low, high) in correction.get("valid_range", {}).items():
            if low > high:
                problems.append(f"bias_correction.valid_range.{name}: min {low} is greater than max {high}")
    return problems


def _data_problems(job):
    problems = []
    data = job["data"]
    for name, (low, high) in data.get("valid_range", {}).items():
        if low > high:
            problems.append(f"data.valid_range.{name}: min {low} is greater than max {high}")

    # A misspelt name in valid_range would silently check nothing.
    variables = list(data.get("features") or []) + list(data.get("static_features") or []) + list(data.get("targets") or [])
    if data.get("features") or job["kind"] == "train":
        for name in data.get("valid_range", {}):
            if variables and name not in variables:
                problems.append(
                    f"data.valid_range.{name}: not a feature or target of this job{_close_match(name, variables)}; "
                    f"expected one of {', '.join(map(repr, variables))}"
                )

    time_range = data.get("time", {})
    if "start" in time_range and "stop" in time_range and time_range["stop"] <= time_range["start"]:
        problems.append(f"data.time: stop {time_range['stop']} must be greater than start {time_range['start']}")

    output = output_path(job)
    if os.path.realpath(output) == os.path.realpath(data["file"]):
        problems.append(f"{_output_field(job)}: is the input file data.file; inputs are never written, choose another output file")
    return problems


def _read_job_file(path):
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise JobError(path, ["(file): not found"]) from err
    except OSError as err:
        raise JobError(path, [f"(file): cannot be read: {err.strerror}"]) from err
    except UnicodeDecodeError as err:
        raise JobError(path, ["(file): not UTF-8 text"]) from err
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise JobError(path, [f"(file): invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"]) from err
    return raw, hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_job(path):
    """Read, validate and normalize one job file.

    Parameters
    ----------
    path : str or path-like
        JSON job file without a ``sweep`` section.

    Returns
    -------
    dict
        The normalized job, see :func:`normalize_job`.

    Raises
    ------
    JobError
        If the file is missing, is not JSON, is not a valid job, or has a
        sweep (use :func:`load_job_file` for those).
    """
    raw, file_sha256 = _read_job_file(path)
    job = normalize_job(raw, source=str(path), folder=str(Path(path).resolve().parent))
    job["job_file_sha256"] = file_sha256
    return job


def load_job_file(path):
    """Read, validate and normalize a job file, expanding its ``sweep`` into several jobs.

    Returns
    -------
    list of dict
        One normalized job, or one per combination of the sweep's values.

    Raises
    ------
    JobError
        With every problem of the file and of each expanded job.
    """
    raw, file_sha256 = _read_job_file(path)
    if not isinstance(raw, dict) or "sweep" not in raw:
        return [load_job(path)]

    # Check the file as written first, so that a mistake outside the sweep is
    # reported once rather than once per expanded job.
    problems = schema_problems(raw)
    if problems:
        raise JobError(path, problems)
    try:
        expanded = expand_sweep(raw, raw.get("name", Path(path).name.removesuffix(".json")))
    except SweepError as err:
        raise JobError(path, err.problems) from err

    jobs, problems = [], []
    for variant in expanded:
        try:
            job = normalize_job(variant, source=str(path), folder=str(Path(path).resolve().parent))
        except JobError as err:
            problems.extend(f"sweep job {variant['name']!r}: {problem}" for problem in err.problems)
            continue
        job["job_file_sha256"] = file_sha256
        jobs.append(job)
    if problems:
        raise JobError(path, problems)
    return jobs


def output_path(job):
    """Return the file a job writes."""
    return job["output"]["model_file"] if job["kind"] == "train" else job["output"]["file"]


def _output_field(job):
    return "output.model_file" if job["kind"] == "train" else "output.file"


def output_conflicts(jobs):
    """Return a :class:`JobError` for each job whose output another job in the run writes or reads.

    Two jobs may not write one file, and no job may write a file that another
    job reads as data. A forecast that reads the model file a train job of the
    same run writes is a dependency, not a conflict.
    """
    errors = []
    writers = {}
    readers = {}
    for job in jobs:
        readers.setdefault(os.path.realpath(job["data"]["file"]), job["source"])

    for job in jobs:
        field_name = _output_field(job)
        target = os.path.realpath(output_path(job))
        if target in writers:
            other = writers[target]
            if os.path.realpath(other) == os.path.realpath(job["source"]):
                problem = f"{field_name}: the job file is given twice, so two runs would write {target}; give it once"
            else:
                problem = f"{field_name}: {target} is also written by {other}; give each job its own output"
            errors.append(JobError(job["source"], [problem]))
            continue
        writers[target] = job["source"]
        if target in readers and os.path.realpath(readers[target]) != os.path.realpath(job["source"]):
            errors.append(
                JobError(job["source"], [f"{field_name}: {target} is the input data.file of {readers[target]}; inputs are never written, choose another output"])
            )
    return errors


def collect_jobs(paths):
    """Load job files and return the valid jobs and one :class:`JobError` per problem file.

    Unlike :func:`load_jobs` this does not raise, so a caller can report every
    file. Output conflicts between the valid jobs are among the errors, and the
    jobs they concern are left out of the returned list.
    """
    jobs, errors = [], []
    for path in paths:
        try:
            jobs.extend(load_job_file(path))
        except JobError as err:
            errors.append(err)

    conflicts = output_conflicts(jobs)
    rejected = {id(job) for job in jobs for err in conflicts if err.source == job["source"]}
    return [job for job in jobs if id(job) not in rejected], errors + conflicts


def load_jobs(paths):
    """Load several job files, expand their sweeps, collect every error, and reject two jobs writing one output.

    Raises
    ------
    JobError
        Listing all problems of all files, grouped by file.
    """
    jobs, errors = collect_jobs(paths)
    if errors:
        if len(errors) == 1:
            raise errors[0]
        problems = [f"{err.source}: {problem}" for err in errors for problem in err.problems]
        raise JobError(f"{len(errors)} job files", problems)
    return jobs
