"""Job files: the JSON Schema, loading, defaults and semantic checks.

This module imports neither TensorFlow nor h5py, so that validating a job file
is fast. A loaded job is a plain ``dict`` (JSON data with absolute paths and
defaults filled in) that can be sent to a worker process as it is.
"""

import copy
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
WEIGHTS_SUFFIX = ".weights.h5"

_POSITIVE_INT = {"type": "integer", "minimum": 1}
_NAME_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
_ACTIVATION = {"type": "string", "minLength": 1}
_FRACTION = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}

_LOCATIONS = {
    "description": (
        "Locations to use: a list of ids from the location coordinate, or an index "
        "range {start, stop, step}. All locations when absent."
    ),
    "oneOf": [
        {"type": "array", "items": {"type": ["string", "integer"]}, "minItems": 1},
        {
            "type": "object",
            "properties": {
                "start": {"type": "integer", "minimum": 0},
                "stop": {"type": "integer", "minimum": 0},
                "step": _POSITIVE_INT,
            },
            "additionalProperties": False,
        },
    ],
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
        "layout": {"const": "series"},
        "features": {**_NAME_LIST, "description": "Datasets shaped (location, time), one per feature."},
        "targets": {**_NAME_LIST, "description": "Datasets shaped (location, time), one per target."},
        "locations": _LOCATIONS,
        "exclude_locations": {"type": "array", "items": {"type": ["string", "integer"]}},
        "time": _TIME_RANGE,
        "valid_range": _VALID_RANGE,
        "location_coordinate": {"type": "string", "description": "Dataset of location ids."},
        "time_coordinate": {"type": "string", "description": "Dataset of time values."},
        "axis_order": {
            "enum": ["location,time", "time,location"],
            "description": "Axis order of the 2-D datasets; 'time,location' for column-major writers.",
        },
        "missing_features": {
            "enum": ["error", "ffill", "zero"],
            "description": "What to do with NaN, infinite or out-of-range feature values.",
        },
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
        "missing_features": {"enum": ["error", "ffill", "zero"]},
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

_TRAIN_JOB = {
    "type": "object",
    "properties": {
        "kind": {"const": "train"},
        "name": {"type": "string", "minLength": 1},
        "data": {"oneOf": [_SERIES_DATA, _SAMPLES_DATA]},
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
        "kind": {"const": "forecast"},
        "name": {"type": "string", "minLength": 1},
        "model_file": {"type": "string", "minLength": 1, "description": "Model file written by a train job."},
        "data": {
            **_SERIES_DATA,
            "required": ["file"],
            "properties": {
                **_SERIES_DATA["properties"],
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
    "properties": {"kind": {"enum": list(JOB_KINDS)}},
    "required": ["kind"],
    "allOf": [
        {"if": {"properties": {"kind": {"const": "train"}}}, "then": _TRAIN_JOB},
        {"if": {"properties": {"kind": {"const": "forecast"}}}, "then": _FORECAST_JOB},
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
        "jit_compile": False,
    },
    "scaling": {"features": "standard", "targets": "standard"},
}

FORECAST_DEFAULTS = {"spinup": 0, "chunks": {"locations": 4096, "time": 2048}}

DATA_DEFAULTS = {
    "series": {"layout": "series", "valid_range": {}, "axis_order": "location,time", "missing_features": "error", "exclude_locations": []},
    "samples": {"valid_range": {}, "missing_features": "error"},
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


def _describe_schema_error(error):
    # An error inside oneOf/allOf is reported at the deepest subschema that failed,
    # because the top-level message ("is not valid under any of the given schemas")
    # does not tell the user what to change.
    best = jsonschema.exceptions.best_match([error])
    path = field_path(best.absolute_path)
    if best.validator == "additionalProperties":
        allowed = sorted(best.schema.get("properties", {}))
        extra = sorted(set(best.instance) - set(allowed))
        return f"{path}: unknown field(s) {', '.join(map(repr, extra))}; allowed: {', '.join(allowed)}"
    if best.validator == "enum":
        return f"{path}: got {best.instance!r}, expected one of {', '.join(map(repr, best.validator_value))}"
    if best.validator == "const":
        return f"{path}: got {best.instance!r}, expected {best.validator_value!r}"
    if best.validator == "required":
        return f"{path}: {best.message}"
    return f"{path}: {best.message}"


def schema_problems(job):
    """Return one message per JSON Schema violation of ``job``, in document order."""
    validator = jsonschema.Draft202012Validator(JOB_SCHEMA)
    errors = sorted(validator.iter_errors(job), key=lambda e: [str(p) for p in e.absolute_path])
    problems = []
    for error in errors:
        message = _describe_schema_error(error)
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
        raise JobError(source, problems)
    if "sweep" in raw:
        raise JobError(source, ["sweep: a job with a sweep is several jobs; expand it with rnnjobs.sweep.expand_sweep or load its file with load_jobs"])

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

    stem = Path(source).name.removesuffix(".json") if source != "<dict>" else job["kind"]
    job.setdefault("name", stem)
    job["source"] = str(source)
    job["spec_sha256"] = spec_hash(job)

    problems = semantic_problems(job)
    if problems:
        raise JobError(source, problems)
    return job


def spec_hash(job):
    """Return the SHA-256 of a job's settings, which decides whether an output is up to date."""
    settings = {key: value for key, value in job.items() if key not in ("source", "spec_sha256", "name")}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def semantic_problems(job):
    """Return the problems of a normalized job that the JSON Schema cannot express."""
    problems = []
    if job["kind"] == "train":
        model_file = job["output"]["model_file"]
        if not model_file.endswith(WEIGHTS_SUFFIX):
            suggestion = model_file.removesuffix(".hdf5").removesuffix(".h5") + WEIGHTS_SUFFIX
            problems.append(
                f"output.model_file: Keras 3 saves weights only to names ending in "
                f"{WEIGHTS_SUFFIX!r}, got {os.path.basename(model_file)!r}; use {suggestion!r}"
            )
        data = job["data"]
        if data.get("layout") == "series" and not data.get("targets"):
            problems.append("data.targets: a series train job needs at least one target dataset")
        for name in data.get("valid_range", {}):
            low, high = data["valid_range"][name]
            if low > high:
                problems.append(f"data.valid_range.{name}: min {low} is greater than max {high}")
        time_range = data.get("time", {})
        if "start" in time_range and "stop" in time_range and time_range["stop"] <= time_range["start"]:
            problems.append(f"data.time: stop {time_range['stop']} must be greater than start {time_range['start']}")
        elif "start" in time_range and "stop" in time_range:
            length = time_range["stop"] - time_range["start"]
            if job["shapes"]["timesteps"] > length:
                problems.append(
                    f"shapes.timesteps: {job['shapes']['timesteps']} is longer than the "
                    f"{length} steps of data.time"
                )
        if job["shapes"]["stateful"] and job["training"]["remainder"] == "pad":
            problems.append(
                "training.remainder: 'pad' is not supported for stateful training; use 'error' or 'drop'"
            )
    else:
        if job["data"].get("targets"):
            problems.append("data.targets: a forecast job takes no targets; the model file names them")
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


def load_jobs(paths):
    """Load several job files, expand their sweeps, collect every error, and reject two jobs writing one output.

    Raises
    ------
    JobError
        Listing all problems of all files, grouped by file.
    """
    jobs, errors = [], []
    for path in paths:
        try:
            jobs.extend(load_job_file(path))
        except JobError as err:
            errors.append(err)

    writers = {}
    for job in jobs:
        target = os.path.realpath(output_path(job))
        if target in writers:
            field = "output.model_file" if job["kind"] == "train" else "output.file"
            errors.append(
                JobError(job["source"], [f"{field}: {target} is also written by {writers[target]}; give each job its own output"])
            )
        else:
            writers[target] = job["source"]

    if errors:
        if len(errors) == 1:
            raise errors[0]
        problems = [f"{err.source}: {problem}" for err in errors for problem in err.problems]
        raise JobError(f"{len(errors)} job files", problems)
    return jobs
