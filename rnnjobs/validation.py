"""Checks of jobs against their data, model files and outputs, run before any job starts.

``rnnjobs validate`` runs these checks alone. ``train``, ``forecast`` and
``run`` run them on every job before the first one starts, so a bad dataset
stops the run with exit status 2 before any training. The checks open HDF5
inputs read-only with h5py and never import TensorFlow. They read every
selected value once, in blocks of rows, to find NaN, infinite and
out-of-range values; the readers in :mod:`rnnjobs.data` call the same check
functions when a job runs.
"""

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from rnnjobs.batching import BatchPlanError, sequential_plan, stateful_plan
from rnnjobs.data import (
    DataError,
    _mask_invalid,
    _read_rows,
    check_sample_datasets,
    first_position,
    float32_overflow,
    float32_overflow_error,
    get_dataset,
    invalid_value_counts,
    merge_counts,
    missing_features_error,
    open_hdf5,
    read_block,
    read_static,
    reversed_axes_hint,
    sample_position,
    select_series,
    series_position,
)
from rnnjobs.spec import RECURRENT_LAYERS, output_path

logger = logging.getLogger(__name__)

# Values read at a time per dataset when scanning: 4M values, 32 MB as float64.
BLOCK_VALUES = 1 << 22

# Weight arrays per recurrent cell in Keras 3: the input kernel and the
# recurrent kernel have this many blocks of ``units`` columns.
_GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


class DataCheckError(DataError):
    """Problems found in the data, model files or outputs of jobs before any job ran.

    Parameters
    ----------
    problems : dict
        Maps each job file to the list of its problems.
    """

    def __init__(self, problems):
        self.problems = dict(problems)
        lines = []
        for source, messages in self.problems.items():
            lines.append(f"{source}: data check failed:")
            lines.extend(f"  {message}" for message in messages)
        super().__init__("\n".join(lines))


@dataclass
class JobCheck:
    """Outcome of the checks of one job.

    Attributes
    ----------
    problems : list of str
        Each one stops the job; an empty list means the job may run.
    notes : list of str
        What will happen to the data when the job runs: casts, masked targets, filled features.
    """

    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def check_jobs(jobs):
    """Check every job of a run and raise if any of them has a problem.

    Parameters
    ----------
    jobs : list of dict
        Normalized jobs from :func:`rnnjobs.spec.load_jobs`.

    Returns
    -------
    list of JobCheck
        One per job, in the order of ``jobs``.

    Raises
    ------
    DataCheckError
        Naming every problem of every job.
    """
    checks = check_each_job(jobs)
    sources = [job["source"] for job in jobs]
    problems = {}
    for job, check in zip(jobs, checks):
        if check.problems:
            # A sweep expands one file into several jobs, so name the job where the file is not enough.
            label = job["source"] if sources.count(job["source"]) == 1 else f"{job['source']} (job {job['name']!r})"
            problems[label] = check.problems
    if problems:
        raise DataCheckError(problems)
    return checks


def reject_invalid(jobs):
    """Split jobs into those that may run and result dicts for those whose checks failed.

    A forecast whose model file comes from a rejected train job of the same run
    is rejected too, because its model file will not be written.

    Returns
    -------
    runnable : list of dict
        The jobs that passed their checks.
    rejected : list of dict
        One result per rejected job, with ``status`` ``"invalid"`` and the
        problems in ``error``, in the form :func:`rnnjobs.parallel.run_job` returns.
    """
    checks = check_each_job(jobs)
    runnable, rejected, missing_models = [], [], {}
    for job, check in zip(jobs, checks):
        if check.problems:
            rejected.append(_invalid_result(job, "; ".join(check.problems)))
            if job["kind"] == "train":
                missing_models[os.path.realpath(job["output"]["model_file"])] = job["name"]
        else:
            runnable.append(job)

    still_runnable = []
    for job in runnable:
        producer = missing_models.get(os.path.realpath(job["model_file"])) if job["kind"] == "forecast" else None
        if producer is None:
            still_runnable.append(job)
        else:
            rejected.append(_invalid_result(job, f"not run: its model file comes from job {producer!r}, which was rejected"))
    return still_runnable, rejected


def _invalid_result(job, error):
    return {"name": job["name"], "kind": job["kind"], "status": "invalid", "error": error, "output": None, "seconds": 0.0}


def check_each_job(jobs):
    """Check every job of a run and return its :class:`JobCheck`, in the order of ``jobs``, without raising."""
    produced = {os.path.realpath(output_path(job)): job for job in jobs if job["kind"] == "train"}
    # NOTE: jobs of one sweep that read the same data scan it once each.
    return [check_job_data(job, produced) for job in jobs]


def check_job_data(job, produced=None):
    """Check one job's inputs, model file and output location without training.

    Parameters
    ----------
    job : dict
        A normalized job.
    produced : dict, optional
        Maps the real path of each model file that a train job of the same run
        writes to that job. A forecast that reads one of these files is checked
        against the train job, because the file may not exist yet.

    Returns
    -------
    JobCheck
    """
    check = JobCheck()
    check.problems.extend(output_location_problems(job))
    try:
        if job["kind"] == "train":
            _check_train_job(job, check)
        else:
            _check_forecast_job(job, check, produced or {})
    except DataError as err:
        check.problems.append(str(err))
    for note in check.notes:
        logger.debug("%s: %s", job["name"], note)
    return check


def output_location_problems(job):
    """Return problems that would stop a job from writing its output: a folder in the way, or no write access."""
    target = os.path.abspath(output_path(job))
    field_name = "output.model_file" if job["kind"] == "train" else "output.file"
    if os.path.isdir(target):
        return [f"{job['source']}: {field_name}: {target} is a folder; give a file name"]
    folder = os.path.dirname(target)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return [f"{job['source']}: {field_name}: cannot create the folder of {target} because {folder} is a file"]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [f"{job['source']}: {field_name}: no permission to write in {folder}"]
    return []


# Train jobs.


def _check_train_job(job, check):
    spec = job["data"]
    with open_hdf5(spec["file"]) as h5file:
        if spec["layout"] == "samples":
            _check_samples(job, h5file, check)
        else:
            _check_train_series(job, h5file, check)


def _check_train_series(job, h5file, check):
    spec, shapes = job["data"], job["shapes"]
    selection = select_series(h5file, spec, spec["features"] + spec["targets"])
    n_times = selection.stop - selection.start
    if n_times < shapes["timesteps"]:
        hint = reversed_axes_hint(spec["axis_order"]) if selection.n_locations >= shapes["timesteps"] else ""
        check.problems.append(
            f"{spec['file']}: shapes.timesteps: {shapes['timesteps']} is longer than the {n_times} time steps "
            f"selected from dataset {selection.datasets[0].name!r}{hint}"
        )
        return

    _scan_series(selection, spec, spec["features"], spec["targets"], check)
    _check_static(h5file, selection, spec, spec.get("static_features", []), check)

    n_locations = len(selection.rows)
    split = job["training"]["validation_split"]
    n_validation = int(round(split * n_locations)) if split else 0
    _check_batches(job, n_locations - n_validation, n_validation, n_times, check)


def _check_samples(job, h5file, check):
    spec = job["data"]
    x_dataset = get_dataset(h5file, spec["x"])
    y_dataset = get_dataset(h5file, spec.get("y", "y"))
    feature_names, target_names = check_sample_datasets(x_dataset, y_dataset, spec)
    reverse = spec["axis_order"] == "features,timesteps,samples"
    x_shape = x_dataset.shape[::-1] if reverse else x_dataset.shape
    y_shape = y_dataset.shape[::-1] if reverse else y_dataset.shape
    check_sample_shapes(job, x_dataset.name, x_shape, y_dataset.name, y_shape)

    _scan_samples(x_dataset, spec, feature_names, reverse, check, features=True)
    _scan_samples(y_dataset, spec, target_names, reverse, check, features=False)

    n_samples = x_shape[0]
    n_validation = int(round(job["training"]["validation_split"] * n_samples))
    _check_batches(job, n_samples - n_validation, n_validation, x_shape[1], check)


def check_sample_shapes(job, x_name, x_shape, y_name, y_shape):
    """Raise :class:`DataError` if samples do not fit the job's timesteps and ``return_sequences``.

    Parameters
    ----------
    job : dict
    x_name, y_name : str
        Dataset names, for the message.
    x_shape : tuple of int
        ``(samples, timesteps, features)``.
    y_shape : tuple of int
        ``(samples, targets)`` or ``(samples, timesteps, targets)``.
    """
    path, shapes = job["data"]["file"], job["shapes"]
    if x_shape[1] != shapes["timesteps"]:
        raise DataError(
            f"{path}: dataset {x_name!r} has {x_shape[1]} timesteps per sample, the job has "
            f"shapes.timesteps={shapes['timesteps']}; make them equal"
        )
    if len(y_shape) == 2 and shapes["return_sequences"]:
        raise DataError(
            f"{path}: dataset {y_name!r} has one target per sample (shape {tuple(y_shape)}), but "
            "shapes.return_sequences is true, which trains on a target at every step; set it to false "
            "to train on the last step"
        )


def _check_batches(job, n_train, n_validation, n_times, check):
    """Check that the data splits into whole batches, from the counts alone.

    Stateful training needs every batch full, because each slot carries one
    series' state to the next batch. Counts are of locations in the series
    layout and of samples in the samples layout.

    NOTE: stateless training with ``training.remainder`` 'error' is checked
    when the job runs, because its window count leaves out windows without a
    valid target, which needs the targets.
    """
    spec, shapes = job["data"], job["shapes"]
    samples = spec["layout"] == "samples"
    unit = "samples" if samples else "locations"
    if n_train <= 0:
        check.problems.append(
            f"{spec['file']}: no training {unit} left after training.validation_split "
            f"{job['training']['validation_split']} of {n_train + n_validation}; lower the split"
        )
        return
    if not shapes["stateful"]:
        return

    batch_size, remainder = shapes["batch_size"], job["training"]["remainder"]
    for part, count in (("training", n_train), ("validation", n_validation)):
        if not count:
            continue
        try:
            if samples:
                plan = sequential_plan(count, batch_size, remainder)
            else:
                plan = stateful_plan(count, n_times, shapes["timesteps"], batch_size, remainder)
        except BatchPlanError:
            if count % batch_size == 0:
                check.problems.append(_leftover_steps_message(job, n_times))
            else:
                check.problems.append(_remainder_message(job, part, count, n_train, n_validation))
            continue
        if plan.dropped:
            left_out = ", ".join(f"{count} {what.replace('_', ' ')}" for what, count in plan.dropped.items())
            check.notes.append(f"{part} data: left out to fill whole stateful batches: {left_out}")


def _leftover_steps_message(job, n_times):
    spec, timesteps = job["data"], job["shapes"]["timesteps"]
    leftover = n_times % timesteps
    fitting = [n_times - leftover] if n_times >= timesteps else []
    return (
        f"{spec['file']}: data.time selects {n_times} steps, which do not fill whole stateful windows of "
        f"shapes.timesteps {timesteps} ({leftover} step(s) left over); set shapes.timesteps to a divisor of "
        f"{n_times}, make data.time {fitting[0] if fitting else timesteps} steps long, or set training.remainder "
        "to 'drop' to leave out the last steps"
    )


def _remainder_message(job, part, count, n_train, n_validation):
    spec, batch_size = job["data"], job["shapes"]["batch_size"]
    samples = spec["layout"] == "samples"
    unit = "samples" if samples else "locations"
    datasets = f"datasets {spec['x']!r} and {spec.get('y', 'y')!r}" if samples else "datasets " + ", ".join(
        repr(name) for name in spec["features"] + spec["targets"]
    )
    split = job["training"]["validation_split"]
    origin = ""
    if n_validation:
        origin = (
            f" ({n_train + n_validation} minus {n_validation} held out by validation_split {split})"
            if part == "training"
            else f" (held out by validation_split {split})"
        )
    counts = [n_train, n_validation] if n_validation else [n_train]
    fitting = _fitting_batch_sizes(counts, batch_size)
    return (
        f"{spec['file']}: {datasets}: the {count} {part} {unit}{origin} do not fill whole stateful "
        f"batches of shapes.batch_size {batch_size} ({count % batch_size} left over); set shapes.batch_size "
        f"to a divisor of {' and '.join(map(str, counts))} (for example {', '.join(map(str, fitting))}), "
        f"or set training.remainder to 'drop' to leave out the {unit} left over"
    )


def _fitting_batch_sizes(counts, batch_size, n=4):
    """Return up to ``n`` batch sizes nearest to ``batch_size`` that divide every count."""
    common = int(np.gcd.reduce(np.asarray(counts, dtype=np.int64)))
    divisors = [d for d in range(1, common + 1) if common % d == 0]
    return sorted(sorted(divisors, key=lambda d: (abs(d - batch_size), -d))[:n])


# Forecast jobs.


def _check_forecast_job(job, check, produced):
    trainer = produced.get(os.path.realpath(job["model_file"]))
    if trainer is not None:
        model = _model_of_train_job(trainer)
    else:
        model = read_model_summary(job["model_file"])
    feature_names, static_names = check_job_against_model(job, model)

    spec = job["data"]
    for name in spec["valid_range"]:
        if name not in feature_names:
            check.problems.append(
                f"{job['source']}: data.valid_range.{name}: not a feature of the model; expected one of "
                f"{', '.join(map(repr, feature_names))}"
            )

    with open_hdf5(spec["file"]) as h5file:
        selection = select_series(h5file, spec, feature_names)
        n_times = selection.stop - selection.start
        if job["spinup"] >= n_times:
            check.problems.append(
                f"{job['source']}: spinup: {job['spinup']} steps leave nothing of the {n_times} input steps to forecast"
            )
        _scan_series(selection, spec, feature_names, [], check)
        _check_static(h5file, selection, spec, static_names, check)
        units = _dataset_units(h5file, feature_names + static_names)
        check.notes.extend(f"warning: {message}" for message in units_mismatches(units, model.get("units", {})))
        correction = job.get("bias_correction")
        if correction is not None:
            observed = correction.get("observed") or model.get("target_names") or []
            if observed:
                select_series(h5file, dict(spec, time=correction["time"]), observed)


def units_mismatches(units, trained_units):
    """Return a warning for each variable whose units differ from the units seen in training.

    Parameters
    ----------
    units, trained_units : dict
        The ``units`` attribute of each input dataset, and those recorded in the model file.

    Unit strings have several spellings ("%" and "percent"), so a difference
    is reported, not rejected.
    """
    return [
        f"dataset {name!r} has units {value!r}, but the model was trained on {trained_units[name]!r}; "
        "convert the data if these are different units"
        for name, value in units.items()
        if name in trained_units and value != trained_units[name]
    ]


def _dataset_units(h5file, names):
    units = {}
    for name in names:
        dataset = h5file.get(name)
        if dataset is not None and "units" in dataset.attrs:
            value = dataset.attrs["units"]
            units[name] = value.decode() if isinstance(value, bytes) else str(value)
    return units


def _check_static(h5file, selection, spec, static_names, check):
    """Check that each static feature has one valid value per selected location."""
    for name in static_names:
        try:
            read_static(get_dataset(h5file, name), selection.rows, selection.n_locations, spec, selection.location_ids[selection.rows])
        except DataError as err:
            check.problems.append(str(err))


def _model_of_train_job(job):
    spec = job["data"]
    if not spec.get("features"):
        raise DataError(
            f"{job['source']}: data.features: a forecast reads the model file this job writes, but the job "
            "names no features, so the forecast cannot match its input datasets; list the names of the "
            "columns of X in data.features"
        )
    return {
        "target_names": list(spec.get("targets") or []),
        "feature_names": list(spec.get("features") or []) + list(spec.get("static_features", [])),
        "static_features": list(spec.get("static_features", [])),
        "path": f"{job['output']['model_file']} (written by {job['source']} in this run)",
    }


def read_model_summary(path):
    """Read a model file's metadata and check that its weights fit its recorded architecture.

    Reads with h5py only, so TensorFlow is not imported.

    Returns
    -------
    dict
        The metadata, see :func:`rnnjobs.modelfile.read_model_metadata`.

    Raises
    ------
    DataError
        If the file is missing or damaged, or its weights do not fit its architecture.
    """
    from rnnjobs.modelfile import read_model_metadata, stored_weight_shapes

    if not os.path.exists(path):
        raise DataError(
            f"{path}: model file not found; run the train job that writes it first, or give both jobs to 'rnnjobs run'"
        )
    metadata = read_model_metadata(path)
    architecture = metadata["architecture"]
    if architecture.get("n_features") != len(metadata["feature_names"]):
        raise DataError(
            f"{path}: the architecture takes {architecture.get('n_features')} features but the file names "
            f"{len(metadata['feature_names'])} ({', '.join(metadata['feature_names'])}); the file is damaged"
        )
    expected = expected_weight_shapes(architecture)
    recorded = metadata["weight_layout"]
    for index, (want, (name, have)) in enumerate(zip(expected, recorded)):
        if list(have) != want:
            raise DataError(
                f"{path}: weight {index} ({name}) has shape {tuple(have)}, but the recorded architecture "
                f"{describe_architecture(architecture)} needs {tuple(want)}; the file is damaged"
            )
    if len(expected) != len(recorded):
        raise DataError(
            f"{path}: the file records {len(recorded)} weight arrays, but the architecture "
            f"{describe_architecture(architecture)} has {len(expected)}; the file is damaged"
        )
    stored = stored_weight_shapes(path)
    if sorted(stored) != sorted(expected):
        missing = _multiset_difference(expected, stored)
        extra = _multiset_difference(stored, expected)
        raise DataError(
            f"{path}: the weights stored in the file do not fit the recorded architecture "
            f"{describe_architecture(architecture)}: arrays of shape {missing or 'none'} are missing and "
            f"{extra or 'none'} are extra; the weights were replaced after training, so train the model again"
        )
    from rnnjobs.inspection import stored_weights_match

    if stored_weights_match(path, metadata) is False:
        raise DataError(
            f"{path}: the weights in the file do not match the SHA-256 recorded at training "
            f"({metadata['weights_sha256'][:12]}...); the file was changed after training, so train the model again"
        )
    return metadata


def _multiset_difference(first, second):
    remaining = [tuple(shape) for shape in second]
    difference = []
    for shape in first:
        if tuple(shape) in remaining:
            remaining.remove(tuple(shape))
        else:
            difference.append(tuple(shape))
    return difference


def expected_weight_shapes(architecture):
    """Return the shapes of the weights Keras 3 creates for an architecture, in model order.

    Computed from the architecture alone, without Keras: for each recurrent
    layer its kernel, recurrent kernel and bias (GRU keeps two bias rows, as
    Keras's default ``reset_after=True`` does), for each Dense layer its kernel
    and bias, then the output layer.
    """
    shapes = []
    width = architecture["n_features"]
    for layer in architecture["hidden_layers"]:
        kind = layer["type"]
        if kind in RECURRENT_LAYERS:
            units = layer["units"]
            columns = _GATES[kind] * units
            bias = [2, columns] if kind == "GRU" else [columns]
            shapes.extend([[width, columns], [units, columns], bias])
            width = units
        elif kind == "Dense":
            shapes.extend([[width, layer["units"]], [layer["units"]]])
            width = layer["units"]
    shapes.extend([[width, architecture["n_targets"]], [architecture["n_targets"]]])
    return shapes


def describe_architecture(architecture):
    """Describe an architecture in one line, such as ``LSTM(20) > Dense(10) > Dense(1)``."""
    parts = []
    for layer in architecture["hidden_layers"]:
        size = layer.get("units", layer.get("rate"))
        parts.append(f"{layer['type']}({size})")
    parts.append(f"Dense({architecture['n_targets']})")
    return " > ".join(parts)


def check_job_against_model(job, metadata):
    """Return the forecast job's time-varying and static feature names, or raise :class:`DataError` naming the first mismatch.

    Parameters
    ----------
    job : dict
        A normalized forecast job.
    metadata : dict
        At least ``feature_names`` and ``path`` of the model file, and
        ``static_features`` if the model has any.

    Returns
    -------
    tuple of (list of str, list of str)
    """
    static = list(metadata.get("static_features", []))
    given_static = list(job["data"].get("static_features", static))
    if given_static != static:
        raise DataError(
            f"{job['source']}: data.static_features: model file {metadata['path']} was trained with "
            f"{static or 'none'}, got {given_static or 'none'}"
        )
    expected = metadata["feature_names"][: len(metadata["feature_names"]) - len(static)]
    given = job["data"].get("features") or expected
    if len(given) != len(expected):
        raise DataError(
            f"{job['source']}: data.features: expected {len(expected)} features ({', '.join(expected)}) "
            f"as in {metadata['path']}, got {len(given)} ({', '.join(given)})"
        )
    for index, (have, want) in enumerate(zip(given, expected)):
        if have != want:
            raise DataError(
                f"{job['source']}: data.features[{index}]: model file {metadata['path']} was trained "
                f"with {want!r} in this position, got {have!r}"
            )
    return list(given), static


# Scans of the values.


@dataclass
class _DatasetScan:
    """Counts and first positions found in one dataset while scanning it block by block."""

    name: str
    overflow: int = 0
    overflow_where: str = ""
    overflow_value: float = 0.0
    invalid: dict = field(default_factory=dict)
    invalid_where: str = ""

    def add_overflow(self, values, where_of):
        mask = float32_overflow(values)
        count = int(mask.sum())
        if count and not self.overflow:
            position = first_position(mask)
            self.overflow_where = where_of(position)
            self.overflow_value = values[position]
        self.overflow += count

    def add_invalid(self, values, mask, counts, where_of):
        if counts and not self.invalid:
            self.invalid_where = where_of(first_position(mask))
        self.invalid = merge_counts([self.invalid, counts])


def _scan_series(selection, spec, feature_names, target_names, check):
    """Scan the selected values of series datasets block by block and record what is wrong."""
    path = spec["file"]
    n_times = selection.stop - selection.start
    time_slice = slice(selection.start, selection.stop)
    rows = selection.rows
    block = max(1, BLOCK_VALUES // max(1, n_times))
    names = list(feature_names) + list(target_names)
    scans = {name: _DatasetScan(name) for name in names}

    for first in range(0, len(rows), block):
        block_rows = rows[first : first + block]
        block_ids = selection.location_ids[block_rows]

        def where_of(position):
            return series_position(selection.location_dim, block_ids[position[0]], selection.start + position[1])

        for name, dataset in zip(names, selection.datasets):
            values = _read_rows(dataset, block_rows, time_slice, spec["axis_order"])
            scan = scans[name]
            scan.add_overflow(values, where_of)
            mask = _mask_invalid(values, name, spec)
            scan.add_invalid(values, mask, invalid_value_counts(values, name, spec), where_of)

    for dataset in selection.datasets:
        _note_cast(dataset, check)
    for name in names:
        _report_scan(scans[name], path, spec, name in feature_names, n_values=len(rows) * n_times, check=check)


def _scan_samples(dataset, spec, names, reverse, check, features):
    """Scan X or y of the samples layout block by block and record what is wrong."""
    n_samples = dataset.shape[-1] if reverse else dataset.shape[0]
    per_sample = int(np.prod(dataset.shape)) // max(1, n_samples)
    block = max(1, BLOCK_VALUES // max(1, per_sample))
    scan = _DatasetScan(dataset.name)

    for first in range(0, n_samples, block):
        stop = min(first + block, n_samples)
        if reverse:
            values = read_block(dataset, (Ellipsis, slice(first, stop))).T
        else:
            values = read_block(dataset, slice(first, stop))

        def where_of(position):
            sample = first + position[0]
            if features:
                return sample_position(sample, position[1], names[position[2]])
            return f"sample {sample}, index {tuple(position[1:])}"

        scan.add_overflow(values, where_of)
        mask = np.zeros(values.shape, dtype=bool)
        counts = []
        for k, name in enumerate(names):
            mask[..., k] = _mask_invalid(values[..., k], name, spec)
            counts.append(invalid_value_counts(values[..., k], name, spec))
        scan.add_invalid(values, mask, merge_counts(counts), where_of)

    _note_cast(dataset, check)
    _report_scan(scan, spec["file"], spec, features, n_values=int(np.prod(dataset.shape)), check=check)


def _report_scan(scan, path, spec, is_feature, n_values, check):
    if scan.overflow:
        check.problems.append(str(float32_overflow_error(path, scan.name, scan.overflow, scan.overflow_where, scan.overflow_value)))
    if not scan.invalid:
        return
    total = sum(scan.invalid.values())
    kinds = ", ".join(f"{count} {kind}" for kind, count in scan.invalid.items())
    if not is_feature:
        check.notes.append(
            f"dataset {scan.name!r}: {total} of {n_values} target value(s) ({kinds}) will be masked in the loss"
        )
    elif spec["missing_features"] == "error":
        check.problems.append(str(missing_features_error(path, scan.name, scan.invalid, scan.invalid_where)))
    else:
        check.notes.append(
            f"dataset {scan.name!r}: {total} feature value(s) ({kinds}) will be filled with "
            f"data.missing_features {spec['missing_features']!r}"
        )


def _note_cast(dataset, check):
    if dataset.dtype != np.float32:
        check.notes.append(f"dataset {dataset.name!r}: {dataset.dtype} values will be cast to float32")
