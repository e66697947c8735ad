"""Sweeps: expand one job file into several jobs, one per combination of values.

A job file may have a ``sweep`` section::

    "sweep": {
        "fields": {"training.learning_rate": [0.01, 0.001],
                   "model.hidden_layers[0].units": [8, 16]},
        "labels": {"training.learning_rate": "lr"},
        "seeds": [1, 2, 3]
    }

The jobs are the Cartesian product of the field values, with ``seeds`` (values
of ``training.seed``, for an ensemble) varying fastest. Each job gets a name and
an output file made from its values, for example ``fmc_lr0.01_units8_seed1``
and ``out/fmc_lr0.01_units8_seed1.weights.h5``. This module works on the raw
JSON data and imports nothing heavy; :func:`rnnjobs.spec.load_jobs` validates
each expanded job like any other.
"""

import copy
import itertools
import math
import os
import re

# A field path as error messages write it: names joined by dots, list indices in brackets.
FIELD_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])*(\.[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])*)*$"
LABEL_PATTERN = r"^[A-Za-z][A-Za-z0-9.-]*$"
MAX_SWEEP_JOBS = 10_000
SEED_FIELD = "training.seed"

# A sweep derives each job's name and output itself and cannot change a job's kind.
FIXED_FIELDS = ("kind", "name", "output", "sweep")

SWEEP_SCHEMA = {
    "description": (
        "Expand this file into one job per combination of the listed values (their "
        "Cartesian product), each with its own name and output file made from its values."
    ),
    "type": "object",
    "properties": {
        "fields": {
            "description": "Field path (such as model.hidden_layers[0].units) to the list of values it takes.",
            "type": "object",
            "propertyNames": {"pattern": FIELD_PATH_PATTERN},
            "additionalProperties": {"type": "array", "minItems": 1},
            "minProperties": 1,
        },
        "seeds": {
            "description": "Values of training.seed, one job each, for an ensemble (train jobs only).",
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "minItems": 1,
            "uniqueItems": True,
        },
        "labels": {
            "description": "Short names for fields in job names and output files; the field's last name when absent.",
            "type": "object",
            "additionalProperties": {"type": "string", "pattern": LABEL_PATTERN},
        },
    },
    "anyOf": [{"required": ["fields"]}, {"required": ["seeds"]}],
    "additionalProperties": False,
}

_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]")
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._+-]+")
_FILE_EXTENSIONS = (".weights.h5", ".h5", ".nc", ".json")


class SweepError(ValueError):
    """Invalid ``sweep`` section; ``problems`` lists one message per problem, each with its field path."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def _path_steps(path):
    """Return ``(key, text)`` for each step of a field path, ``text`` being the path up to that step."""
    if not re.match(FIELD_PATH_PATTERN, path):
        raise SweepError([f"sweep.fields: {path!r} is not a field path such as 'model.hidden_layers[0].units'"])
    return [(name if name else int(index), path[: match.end()]) for match in _PATH_PART.finditer(path) for name, index in [match.groups()]]


def _set_field(job, path, value):
    steps = _path_steps(path)
    container, above = job, "the job"
    for position, (key, text) in enumerate(steps):
        if isinstance(key, int):
            if not isinstance(container, list):
                raise SweepError([f"sweep.fields.{path}: {above} is not a list"])
            if key >= len(container):
                raise SweepError([f"sweep.fields.{path}: {above} has {len(container)} items, so [{key}] does not exist"])
        elif not isinstance(container, dict):
            raise SweepError([f"sweep.fields.{path}: {above} is not an object"])
        if position == len(steps) - 1:
            container[key] = copy.deepcopy(value)
        elif isinstance(key, int):
            container = container[key]
        else:
            container = container.setdefault(key, {})
        above = text


def format_value(value, position):
    """Return ``value`` as text safe in file names.

    A path such as ``../out/fmc_seed1.weights.h5`` gives its file name without
    the extension (``fmc_seed1``), and a list or object gives its ``position``
    in the list of values.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(position)
    if isinstance(value, str):
        name = os.path.basename(value.rstrip("/"))
        for extension in _FILE_EXTENSIONS:
            name = name.removesuffix(extension)
        return _UNSAFE_CHARACTERS.sub("-", name).strip("-") or str(position)
    return str(position)


def _labels(fields, labels):
    problems = [f"sweep.labels.{path}: no such field in sweep.fields" for path in labels if path not in fields]
    chosen = {}
    for path in fields:
        names = [key for key, _ in _path_steps(path) if isinstance(key, str)]
        chosen[path] = labels.get(path) or names[-1]
    by_label = {}
    for path, label in chosen.items():
        by_label.setdefault(label, []).append(path)
    for label, paths in by_label.items():
        if len(paths) > 1:
            clash = " and ".join(repr(p) for p in paths)
            problems.append(f"sweep.labels: fields {clash} would all be labelled {label!r} in output names; give them distinct labels")
    return chosen, problems


def _check_fields(raw, fields, seeds):
    problems = []
    for path in fields:
        top = str(_path_steps(path)[0][0])
        if top in FIXED_FIELDS:
            problems.append(f"sweep.fields.{path}: a sweep cannot set {top!r}; it derives names and outputs from the values")
    if seeds is not None:
        if raw.get("kind") != "train":
            problems.append("sweep.seeds: only train jobs have a seed; sweep model_file or data fields instead")
        if SEED_FIELD in fields:
            problems.append(f"sweep.seeds: give seeds either here or in sweep.fields.{SEED_FIELD}, not both")
    count = math.prod(len(values) for values in fields.values()) * len(seeds or [None])
    if count > MAX_SWEEP_JOBS:
        problems.append(f"sweep: expands into {count} jobs, more than the {MAX_SWEEP_JOBS} allowed; split it into several files")
    return problems


def output_field(raw):
    """Return the key path of the file a raw job writes: ``("output", "model_file")`` or ``("output", "file")``."""
    return ("output", "model_file") if raw.get("kind") == "train" else ("output", "file")


def _with_suffix(path, suffix):
    for extension in _FILE_EXTENSIONS:
        if path.endswith(extension):
            return path[: -len(extension)] + suffix + extension
    stem, extension = os.path.splitext(path)
    return stem + suffix + extension


def expand_sweep(raw, base_name):
    """Expand a raw job with a ``sweep`` section into one raw job per combination of values.

    Parameters
    ----------
    raw : dict
        The job as read from JSON; its ``sweep`` section must already satisfy
        :data:`SWEEP_SCHEMA`.
    base_name : str
        Name of the job before expansion; each expanded job's name starts with it.

    Returns
    -------
    list of dict
        The expanded jobs without ``sweep``, each with its own ``name`` and
        output file. A raw job without ``sweep`` is returned alone, unchanged.

    Raises
    ------
    SweepError
        If a field cannot be set, a field is one that a sweep derives itself,
        labels clash, or two combinations would get the same output name.
    """
    if "sweep" not in raw:
        return [raw]
    sweep = raw["sweep"]
    fields = dict(sweep.get("fields", {}))
    seeds = sweep.get("seeds")
    problems = _check_fields(raw, fields, seeds)
    labels = dict(sweep.get("labels", {}))
    if seeds is not None:
        fields[SEED_FIELD] = seeds
        labels[SEED_FIELD] = "seed"
    labels, label_problems = _labels(fields, labels)
    if problems or label_problems:
        raise SweepError(problems + label_problems)

    base = {key: value for key, value in raw.items() if key != "sweep"}
    section, key = output_field(raw)
    base_output = raw.get(section, {}).get(key)
    positions = [range(len(values)) for values in fields.values()]

    jobs, names = [], {}
    for combination in itertools.product(*positions):
        job = copy.deepcopy(base)
        parts = []
        for (path, values), position in zip(fields.items(), combination):
            _set_field(job, path, values[position])
            parts.append(labels[path] + format_value(values[position], position))
        suffix = "_" + "_".join(parts)
        job["name"] = base_name + suffix
        if isinstance(base_output, str):
            job[section][key] = _with_suffix(base_output, suffix)

        if job["name"] in names:
            raise SweepError([
                f"sweep.fields: combinations {names[job['name']]} and {list(combination)} both give the job "
                f"name {job['name']!r}; make the values distinct when written as text, or add labels"
            ])
        names[job["name"]] = list(combination)
        jobs.append(job)
    return jobs
