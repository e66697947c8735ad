"""Input data: reading and checking the HDF5 datasets that jobs name.

Two layouts are supported. In the *series* layout each variable is a dataset
shaped (location, time), as in netCDF files. In the *samples* layout the file
has ready-made arrays ``X (samples, timesteps, features)`` and ``y``.

Inputs are opened read-only and cast to float32 once, here. Feature values
that are NaN, infinite or outside ``valid_range`` are rejected unless the job
names a fill policy. The same problems in targets become NaN, which the loss
masks.
"""

import logging
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

logger = logging.getLogger(__name__)

FLOAT32_MAX = float(np.finfo(np.float32).max)
LOCKING_HINT = (
    "if the file is on a network file system without lock support, set the "
    "environment variable HDF5_USE_FILE_LOCKING=FALSE and retry"
)


class DataError(ValueError):
    """Error in an input file or dataset; the message names the file and the dataset."""


@dataclass
class SeriesData:
    """Variables on (location, time) read from one HDF5 file.

    Attributes
    ----------
    features : ndarray of shape (n_locations, n_times, n_features), float32
    targets : ndarray of shape (n_locations, n_times, n_targets), float32, or None
        NaN where a target is missing or invalid.
    feature_names, target_names : list of str
    location_ids : ndarray of shape (n_locations,)
        Ids from the location coordinate, or the location indices in the file.
    location_dim : str
        Name of the location dimension, such as ``"station"``.
    time_values : ndarray of shape (n_times,)
        Values of the time coordinate, or the time indices in the file.
    time_attrs : dict
        Attributes of the time coordinate (``units``, ``calendar``).
    units : dict
        The ``units`` attribute of each variable that has one.
    file : str
    """

    features: np.ndarray
    targets: np.ndarray | None
    feature_names: list
    target_names: list
    location_ids: np.ndarray
    location_dim: str
    time_values: np.ndarray
    time_attrs: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    file: str = ""
    time_start: int = 0
    masked_targets: int = 0


@dataclass
class SampleData:
    """Ready-made training samples from one HDF5 file."""

    features: np.ndarray
    targets: np.ndarray
    feature_names: list
    target_names: list
    file: str = ""
    masked_targets: int = 0
    units: dict = field(default_factory=dict)


def open_hdf5(path):
    """Open an HDF5 file read-only with errors that name the file and the fix.

    Raises
    ------
    DataError
        If the file is missing, is not HDF5, is damaged or is locked.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: input file not found")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected an HDF5 file")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file (no HDF5 signature){_format_hint(path)}; check the path and the file format")
    try:
        return h5py.File(path, "r")
    except BlockingIOError as err:
        raise DataError(f"{path}: cannot lock the file ({err}); {LOCKING_HINT}") from err
    except OSError as err:
        text = str(err)
        # HDF5 reports "unable to lock file" when flock fails; other messages may contain "lock" by chance.
        if "unable to lock file" in text.lower():
            raise DataError(f"{path}: cannot lock the file ({text}); {LOCKING_HINT}") from err
        raise DataError(f"{path}: cannot be opened as HDF5, the file may be truncated or damaged ({text})") from err


def _format_hint(path):
    try:
        with open(path, "rb") as stream:
            magic = stream.read(4)
    except OSError:
        return ""
    if magic[:3] == b"CDF":
        return " but a netCDF-3 file; convert it with 'nccopy -k nc4 IN OUT'"
    if not magic:
        return " but empty"
    return ""


def get_dataset(h5file, name):
    """Return dataset ``name`` of an open file, or raise :class:`DataError` listing those present."""
    if name not in h5file or not isinstance(h5file[name], h5py.Dataset):
        present = []
        h5file.visititems(lambda key, obj: present.append(key) if isinstance(obj, h5py.Dataset) else None)
        raise DataError(f"{h5file.filename}: dataset {name!r} not found; datasets in the file: {', '.join(present) or 'none'}")
    return h5file[name]


def check_numeric(dataset):
    """Raise :class:`DataError` unless ``dataset`` contains integers or floating-point numbers."""
    kind = dataset.dtype.kind
    if kind not in "iuf":
        raise DataError(
            f"{dataset.file.filename}: dataset {dataset.name!r} has dtype {_dtype_text(dataset.dtype)}, "
            "expected integer or floating-point numbers; store the values as numbers"
        )


def _dtype_text(dtype):
    if h5py.check_string_dtype(dtype) is not None or dtype.kind in "SU":
        return f"{dtype} (text)"
    kinds = {"b": "boolean", "c": "complex", "V": "compound or opaque", "O": "object"}
    return f"{dtype} ({kinds[dtype.kind]})" if dtype.kind in kinds else str(dtype)


def read_block(dataset, selection):
    """Read ``dataset[selection]``, reporting a failed read as a damaged file.

    Raises
    ------
    DataError
        If HDF5 cannot read the data, for example a corrupt compressed chunk.
    """
    try:
        return dataset[selection]
    except OSError as err:
        raise DataError(
            f"{dataset.file.filename}: dataset {dataset.name!r} cannot be read, the file may be "
            f"damaged or truncated ({err})"
        ) from err


def float32_overflow(values):
    """Return a mask of the finite values of ``values`` beyond the float32 range."""
    if values.dtype.kind != "f" or values.dtype.itemsize <= 4:
        return np.zeros(values.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)


def first_position(mask):
    """Return the index tuple of the first true element of ``mask``, or None."""
    flat = np.flatnonzero(mask)
    if not len(flat):
        return None
    return tuple(int(i) for i in np.unravel_index(flat[0], mask.shape))


def float32_overflow_error(path, dataset_name, count, where, value):
    """Return the :class:`DataError` for values that float32 cannot hold."""
    return DataError(
        f"{path}: dataset {dataset_name!r} has {count} value(s) beyond the float32 range "
        f"(+-{FLOAT32_MAX:.3g}), first at {where}: {value!r}; rescale the data, for example to other units"
    )


def to_float32(values, dataset, describe_position=None):
    """Cast values read from ``dataset`` to float32, rejecting finite values beyond its range.

    Parameters
    ----------
    values : ndarray
    dataset : h5py.Dataset
        The dataset ``values`` were read from, for messages.
    describe_position : callable, optional
        Turns an index tuple of ``values`` into text for the error message;
        by default the message gives the index tuple.
    """
    if values.dtype == np.float32:
        return values
    overflow = float32_overflow(values)
    if overflow.any():
        position = first_position(overflow)
        where = describe_position(position) if describe_position else f"index {position}"
        raise float32_overflow_error(dataset.file.filename, dataset.name, int(overflow.sum()), where, values[position])
    logger.info("%s: cast dataset %s from %s to float32", dataset.file.filename, dataset.name, values.dtype)
    return values.astype(np.float32)


def _dimension_scale(dataset, axis):
    try:
        scales = dataset.dims[axis]
        if len(scales):
            return scales[0]
    except (RuntimeError, KeyError, IndexError):
        pass
    return None


def _decode_ids(values):
    if values.dtype.kind in "OSU":
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)
    return values


def _select_locations(spec, location_ids, source):
    n = len(location_ids)
    selection = spec.get("locations")
    if selection is None:
        indices = list(range(n))
    elif isinstance(selection, dict):
        start = selection.get("start", 0)
        stop = min(selection.get("stop", n), n)
        indices = list(range(start, stop, selection.get("step", 1)))
    else:
        indices = _indices_of(selection, location_ids, "data.locations", source)
    excluded = set(_indices_of(spec.get("exclude_locations", []), location_ids, "data.exclude_locations", source))
    indices = [i for i in indices if i not in excluded]
    if not indices:
        raise DataError(f"{source}: data.locations selects no location")
    return np.asarray(indices)


def _indices_of(wanted, location_ids, field_name, source):
    lookup = {str(value): i for i, value in enumerate(location_ids)}
    indices = []
    for value in wanted:
        if str(value) in lookup:
            indices.append(lookup[str(value)])
        elif isinstance(value, int) and 0 <= value < len(location_ids):
            indices.append(value)
        else:
            raise DataError(f"{source}: {field_name}: location {value!r} not found among {len(location_ids)} locations")
    return indices


def _read_rows(dataset, rows, time_slice, axis_order):
    # h5py selects rows only in increasing order, so read sorted and restore the order.
    order = np.argsort(rows)
    sorted_rows = rows[order]
    if axis_order == "time,location":
        block = read_block(dataset, (time_slice, sorted_rows)).T
    else:
        block = read_block(dataset, (sorted_rows, time_slice))
    restored = np.empty_like(block)
    restored[order] = block
    return restored


def check_series_shape(dataset, expected, axis_order, first_name=None):
    """Check that ``dataset`` is 2-D and, if ``expected`` is given, has that (location, time) shape.

    Parameters
    ----------
    dataset : h5py.Dataset
    expected : tuple of int or None
        ``(n_locations, n_times)`` of the first dataset of the job.
    axis_order : {"location,time", "time,location"}
    first_name : str, optional
        Name of the dataset ``expected`` comes from, for the message.

    Returns
    -------
    tuple of int
        The shape as ``(n_locations, n_times)``.
    """
    path = dataset.file.filename
    if dataset.ndim != 2:
        hint = ""
        if dataset.ndim == 3:
            hint = "; a (location, time, feature) dataset is not supported, store one dataset per variable"
        elif dataset.ndim == 1:
            hint = "; store a single series with shape (1, time)"
        raise DataError(
            f"{path}: dataset {dataset.name!r} has shape {dataset.shape}, expected 2 dimensions (location, time){hint}"
        )
    shape = dataset.shape if axis_order == "location,time" else dataset.shape[::-1]
    if expected is not None and shape != expected:
        hint = ""
        if shape[::-1] == expected:
            hint = "; its axes look reversed against the others, so write all variables with the same axis order"
        raise DataError(
            f"{path}: dataset {dataset.name!r} has shape {shape} as (location, time), "
            f"expected {expected} like {repr(first_name) if first_name else 'the first feature'}{hint}"
        )
    return shape


def _mask_invalid(values, name, spec):
    low, high = spec.get("valid_range", {}).get(name, (-np.inf, np.inf))
    with np.errstate(invalid="ignore"):
        invalid = ~np.isfinite(values) | (values < low) | (values > high)
    return invalid


def invalid_value_counts(values, name, spec):
    """Count the NaN, infinite and out-of-``valid_range`` values of variable ``name``.

    Returns
    -------
    dict
        ``{"NaN": n, "infinite": n, "outside valid_range [low, high]": n}``
        with only the kinds that occur.
    """
    counts = {"NaN": int(np.isnan(values).sum()), "infinite": int(np.isinf(values).sum())}
    if name in spec.get("valid_range", {}):
        low, high = spec["valid_range"][name]
        with np.errstate(invalid="ignore"):
            counts[f"outside valid_range [{low}, {high}]"] = int(((values < low) | (values > high)).sum())
    return {kind: count for kind, count in counts.items() if count}


def merge_counts(counts_list):
    """Add up several count dicts such as those of :func:`invalid_value_counts`."""
    merged = {}
    for counts in counts_list:
        for kind, count in counts.items():
            merged[kind] = merged.get(kind, 0) + count
    return merged


def missing_features_error(path, dataset_name, counts, where):
    """Return the :class:`DataError` for invalid feature values under the ``error`` policy."""
    total = sum(counts.values())
    kinds = ", ".join(f"{count} {kind}" for kind, count in counts.items())
    return DataError(
        f"{path}: dataset {dataset_name!r} has {total} missing or invalid feature value(s) ({kinds}), "
        f"first at {where}; clean the data or set data.missing_features to 'ffill' or 'zero'"
    )


def series_position(location_dim, location_id, time_index):
    """Describe a position in the series layout, such as ``station 'S002', time index 3``."""
    return f"{location_dim} {location_id!r}, time index {time_index}"


def _handle_missing_features(values, invalid, names, spec, location_ids, time_start, path, location_dim="location"):
    count = int(invalid.sum())
    if not count:
        return values
    policy = spec.get("missing_features", "error")
    first = np.argwhere(invalid)[0]
    if policy == "error":
        feature = int(first[2])
        counts = invalid_value_counts(values[..., feature], names[feature], spec)
        where = series_position(location_dim, location_ids[first[0]], time_start + int(first[1]))
        raise missing_features_error(path, names[feature], counts, where)
    values = np.where(invalid, np.nan, values)
    if policy == "ffill":
        values = _forward_fill(values)
    values = np.nan_to_num(values, nan=0.0)
    logger.info("%s: filled %d missing feature value(s) with policy %r", path, count, policy)
    return values.astype(np.float32)


def _forward_fill(values):
    """Carry the last valid value forward along axis 1; leading gaps stay NaN."""
    missing = np.isnan(values)
    index = np.where(~missing, np.arange(values.shape[1])[None, :, None], 0)
    np.maximum.accumulate(index, axis=1, out=index)
    filled = np.take_along_axis(values, index, axis=1)
    return filled


@dataclass
class SeriesSelection:
    """The datasets of a series-layout job and the part of them it selects.

    Attributes
    ----------
    datasets : list of h5py.Dataset
        Features, then targets, all checked to be numeric with one shape.
    n_locations, n_times : int
        Shape of the datasets as (location, time).
    location_ids : ndarray of shape (n_locations,)
        Ids from the location coordinate, or the location indices.
    location_dim : str
    rows : ndarray of int
        Indices of the selected locations, in the job's order.
    start, stop : int
        Selected time range, stop excluded.
    time_coord : h5py.Dataset or None
    """

    datasets: list
    n_locations: int
    n_times: int
    location_ids: np.ndarray
    location_dim: str
    rows: np.ndarray
    start: int
    stop: int
    time_coord: object = None


def reversed_axes_hint(axis_order):
    """Return the hint to set ``data.axis_order``, or an empty string when it is already reversed."""
    if axis_order != "location,time":
        return ""
    return (
        "; if the file was written by column-major code such as MATLAB or Fortran, its axes are "
        "reversed: set data.axis_order to 'time,location'"
    )


def select_series(h5file, spec, names):
    """Check the series datasets ``names`` of an open file and resolve the locations and times a job selects.

    Reads only the coordinates, never the data, so it is cheap on large files.

    Returns
    -------
    SeriesSelection

    Raises
    ------
    DataError
        If a dataset is missing, not numeric or of another shape, the axes
        look reversed, or the selection is empty or outside the data.
    """
    path = h5file.filename
    axis_order = spec.get("axis_order", "location,time")
    datasets = [get_dataset(h5file, name) for name in names]
    shape = None
    for dataset in datasets:
        check_numeric(dataset)
        shape = check_series_shape(dataset, shape, axis_order, datasets[0].name)
    n_locations, n_times = shape
    first = datasets[0]
    location_axis = 0 if axis_order == "location,time" else 1

    location_dataset = spec.get("location_coordinate")
    if location_dataset:
        location_coord = get_dataset(h5file, location_dataset)
    else:
        location_coord = _dimension_scale(first, location_axis)
    time_dataset = spec.get("time_coordinate")
    time_coord = get_dataset(h5file, time_dataset) if time_dataset else _dimension_scale(first, 1 - location_axis)
    _check_axis_order(first, location_coord, time_coord, n_locations, n_times, path)

    location_ids = _decode_ids(read_block(location_coord, ())) if location_coord is not None else np.arange(n_locations)
    location_dim = location_coord.name.strip("/") if location_coord is not None else "location"
    rows = _select_locations(spec, location_ids, path)

    time_range = spec.get("time", {})
    start = time_range.get("start", 0)
    stop = time_range.get("stop", n_times)
    if stop > n_times or start >= stop:
        hint = reversed_axes_hint(axis_order) if stop <= n_locations else ""
        raise DataError(
            f"{path}: data.time [{start}, {stop}) is outside the {n_times} time steps of dataset {first.name!r}{hint}"
        )
    return SeriesSelection(datasets, n_locations, n_times, location_ids, location_dim, rows, start, stop, time_coord)


def read_series(spec, feature_names, target_names=(), static_names=()):
    """Read features and targets in the series layout.

    Parameters
    ----------
    spec : dict
        The ``data`` section of a normalized job.
    feature_names : sequence of str
        Feature datasets, each shaped (location, time).
    target_names : sequence of str, default=()
        Target datasets; none for a forecast.
    static_names : sequence of str, default=()
        Datasets shaped (location,), such as elevation, repeated at every
        time step and appended to the features.

    Returns
    -------
    SeriesData
    """
    path = spec["file"]
    axis_order = spec.get("axis_order", "location,time")
    with open_hdf5(path) as h5file:
        selection = select_series(h5file, spec, list(feature_names) + list(target_names))
        datasets, time_coord = selection.datasets, selection.time_coord
        location_ids, location_dim, rows = selection.location_ids, selection.location_dim, selection.rows
        start, stop = selection.start, selection.stop
        time_slice = slice(start, stop)

        def describe_position(position):
            return series_position(location_dim, location_ids[rows][position[0]], start + position[1])

        blocks = []
        for dataset in datasets:
            values = _read_rows(dataset, rows, time_slice, axis_order)
            blocks.append(to_float32(values, dataset, describe_position))
        for name in static_names:
            values = read_static(get_dataset(h5file, name), rows, selection.n_locations, spec, location_ids[rows])
            blocks.insert(len(feature_names), np.repeat(values[:, None], stop - start, axis=1))
        stacked = np.stack(blocks, axis=-1)

        if time_coord is not None:
            time_values = time_coord[time_slice]
            time_attrs = {k: _attr_text(v) for k, v in time_coord.attrs.items() if k in ("units", "calendar", "standard_name", "long_name")}
        else:
            time_values = np.arange(start, stop)
            time_attrs = {}
        units = {ds.name.strip("/"): _attr_text(ds.attrs["units"]) for ds in datasets if "units" in ds.attrs}

    feature_names = list(feature_names) + list(static_names)
    n_features = len(feature_names)
    features = stacked[..., :n_features]
    invalid = np.zeros(features.shape, dtype=bool)
    for k, name in enumerate(feature_names):
        invalid[..., k] = _mask_invalid(features[..., k], name, spec)
    features = _handle_missing_features(features, invalid, list(feature_names), spec, location_ids[rows], start, path, location_dim)

    targets, masked = None, 0
    if target_names:
        targets = stacked[..., n_features:].copy()
        for k, name in enumerate(target_names):
            invalid = _mask_invalid(targets[..., k], name, spec)
            targets[..., k][invalid] = np.nan
            masked += int(invalid.sum())
        if masked:
            logger.info("%s: %d of %d target value(s) missing or outside valid_range are masked in the loss", path, masked, targets.size)

    return SeriesData(
        features=np.ascontiguousarray(features),
        targets=targets,
        feature_names=list(feature_names),
        target_names=list(target_names),
        location_ids=location_ids[rows],
        location_dim=location_dim,
        time_values=time_values,
        time_attrs=time_attrs,
        units=units,
        file=path,
        time_start=start,
        masked_targets=masked,
    )


def read_static(dataset, rows, n_locations, spec=None, location_ids=None):
    """Check a static feature dataset shaped (location,) and return its values at ``rows`` as float32.

    Missing values are rejected whatever the ``data.missing_features``
    setting, because its fill policies work along time and a static value
    has no neighbour in time to take.
    """
    check_numeric(dataset)
    if dataset.shape != (n_locations,):
        raise DataError(
            f"{dataset.file.filename}: static feature dataset {dataset.name!r} has shape {dataset.shape}, "
            f"expected ({n_locations},): one value per location"
        )
    values = to_float32(dataset[()][rows], dataset)
    low, high = (spec or {}).get("valid_range", {}).get(dataset.name.strip("/"), (-np.inf, np.inf))
    with np.errstate(invalid="ignore"):
        invalid = ~np.isfinite(values) | (values < low) | (values > high)
    if invalid.any():
        first = int(np.argmax(invalid))
        where = f"location {location_ids[first]!r}" if location_ids is not None else f"location index {first}"
        raise DataError(
            f"{dataset.file.filename}: static feature dataset {dataset.name!r} has {int(invalid.sum())} missing or "
            f"invalid value(s) (NaN, infinite or outside valid_range), first at {where}; fill policies do not apply "
            "to static features, so give every location a valid value"
        )
    return values


def _check_axis_order(dataset, location_coord, time_coord, n_locations, n_times, path):
    current = "location,time" if dataset.shape == (n_locations, n_times) else "time,location"
    other = "time,location" if current == "location,time" else "location,time"
    hint = (
        "; the axes look reversed (as written by column-major code such as MATLAB or Fortran); "
        f"set data.axis_order to {other!r}"
    )
    lengths = (
        len(location_coord) if location_coord is not None else None,
        len(time_coord) if time_coord is not None else None,
    )
    if lengths == (n_times, n_locations) and n_times != n_locations:
        raise DataError(
            f"{path}: dataset {dataset.name!r} has shape {dataset.shape} but the location coordinate has "
            f"{lengths[0]} values and the time coordinate {lengths[1]}{hint}"
        )
    if location_coord is not None and _looks_like_time(location_coord):
        raise DataError(
            f"{path}: dataset {dataset.name!r} has shape {dataset.shape} and its location axis, read as "
            f"{current!r}, has the time coordinate {location_coord.name!r}{hint}"
        )


def _looks_like_time(coordinate):
    """Return whether a coordinate dataset is a CF time axis (units 'X since ...' or standard_name time)."""
    units = _attr_text(coordinate.attrs.get("units", ""))
    standard_name = _attr_text(coordinate.attrs.get("standard_name", ""))
    return " since " in units or standard_name == "time" or _attr_text(coordinate.attrs.get("axis", "")) == "T"


def _attr_text(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.size == 1:
        return _attr_text(value.item())
    return str(value)


def sample_position(sample, step, feature_name):
    """Describe a position in X of the samples layout."""
    return f"sample {sample}, timestep {step}, feature {feature_name!r}"


def _sample_shape(dataset, reverse):
    return dataset.shape[::-1] if reverse else dataset.shape


def check_sample_datasets(x_dataset, y_dataset, spec):
    """Check X and y of the samples layout against each other and the job's variable names.

    Parameters
    ----------
    x_dataset, y_dataset : h5py.Dataset
    spec : dict
        The ``data`` section of a normalized job.

    Returns
    -------
    feature_names, target_names : list of str
        From the job, or ``X[k]`` and ``y[k]`` when it names none.

    Raises
    ------
    DataError
        If a dataset is not numeric, has the wrong number of dimensions, the
        two disagree in samples or timesteps, or a count differs from the names.
    """
    path = x_dataset.file.filename
    for dataset in (x_dataset, y_dataset):
        check_numeric(dataset)
    reverse = spec.get("axis_order") == "features,timesteps,samples"
    x_shape, y_shape = _sample_shape(x_dataset, reverse), _sample_shape(y_dataset, reverse)
    order = "(features, timesteps, samples)" if reverse else "(samples, timesteps, features)"
    hint = "" if reverse else (
        "; if the file was written by column-major code such as MATLAB or Fortran, its axes are "
        "reversed: set data.axis_order to 'features,timesteps,samples'"
    )

    if len(x_shape) != 3:
        raise DataError(f"{path}: dataset {x_dataset.name!r} has shape {x_dataset.shape}, expected 3 dimensions {order}")
    if len(y_shape) not in (2, 3):
        raise DataError(
            f"{path}: dataset {y_dataset.name!r} has shape {y_dataset.shape}, expected 2 or 3 dimensions: "
            "(samples, targets) or (samples, timesteps, targets)"
        )
    if y_shape[0] != x_shape[0]:
        looks_reversed = x_dataset.shape[-1] == y_dataset.shape[-1]
        raise DataError(
            f"{path}: dataset {y_dataset.name!r} has {y_shape[0]} samples (shape {y_dataset.shape}), "
            f"dataset {x_dataset.name!r} has {x_shape[0]} (shape {x_dataset.shape}); they must be equal"
            f"{hint if looks_reversed else ''}"
        )
    if len(y_shape) == 3 and y_shape[1] != x_shape[1]:
        raise DataError(
            f"{path}: dataset {y_dataset.name!r} has {y_shape[1]} timesteps, dataset {x_dataset.name!r} "
            f"has {x_shape[1]}; they must be equal"
        )

    names = []
    for dataset, shape, field_name in ((x_dataset, x_shape, "features"), (y_dataset, y_shape, "targets")):
        job_names = spec.get(field_name)
        if job_names is None:
            names.append([f"{dataset.name.strip('/')}[{k}]" for k in range(shape[-1])])
            continue
        if len(job_names) != shape[-1]:
            looks_reversed = _sample_shape(dataset, not reverse)[-1] == len(job_names)
            raise DataError(
                f"{path}: dataset {dataset.name!r}: expected {len(job_names)} {field_name} as data.{field_name} names "
                f"({', '.join(job_names)}), got {shape[-1]} (shape {dataset.shape}){hint if looks_reversed else ''}"
            )
        names.append(list(job_names))
    return names[0], names[1]


def read_samples(spec):
    """Read ready-made samples ``X (samples, timesteps, features)`` and ``y``.

    Returns
    -------
    SampleData
    """
    path = spec["file"]
    reverse = spec.get("axis_order") == "features,timesteps,samples"
    with open_hdf5(path) as h5file:
        x_dataset = get_dataset(h5file, spec["x"])
        y_dataset = get_dataset(h5file, spec.get("y", "y"))
        feature_names, target_names = check_sample_datasets(x_dataset, y_dataset, spec)
        features = to_float32(read_block(x_dataset, ()), x_dataset)
        targets = to_float32(read_block(y_dataset, ()), y_dataset)
        x_name = x_dataset.name
    if reverse:
        features, targets = np.ascontiguousarray(features.T), np.ascontiguousarray(targets.T)

    invalid = np.zeros(features.shape, dtype=bool)
    for k, name in enumerate(feature_names):
        invalid[..., k] = _mask_invalid(features[..., k], name, spec)
    if invalid.any() and spec.get("missing_features", "error") == "error":
        sample, step, feature = first_position(invalid)
        counts = merge_counts(invalid_value_counts(features[..., k], name, spec) for k, name in enumerate(feature_names))
        where = sample_position(sample, step, feature_names[feature])
        raise missing_features_error(path, x_name, counts, where)
    if invalid.any():
        features = _handle_missing_features(features, invalid, feature_names, spec, np.arange(len(features)), 0, path)

    masked = 0
    targets = targets.copy()
    for k, name in enumerate(target_names):
        bad = _mask_invalid(targets[..., k], name, spec)
        targets[..., k][bad] = np.nan
        masked += int(bad.sum())
    if masked:
        logger.info("%s: %d of %d target value(s) missing or outside valid_range are masked in the loss", path, masked, targets.size)
    return SampleData(features, targets, list(feature_names), list(target_names), path, masked)


LOOKBACK_STEPS = 4096


def _read_series_block(dataset, rows, time_slice, axis_order):
    """Read file ``rows`` (ascending or not) over ``time_slice``, as one hyperslab when they are consecutive."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):
        span = slice(int(rows[0]), int(rows[-1]) + 1)
        if axis_order == "time,location":
            return read_block(dataset, (time_slice, span)).T
        return read_block(dataset, (span, time_slice))
    return _read_rows(dataset, np.asarray(rows), time_slice, axis_order)


def _as_float32(values, dataset, describe_position):
    """Cast one block to float32; :func:`to_float32` reports values beyond the float32 range."""
    if values.dtype == np.float32:
        return values
    if float32_overflow(values).any():
        to_float32(values, dataset, describe_position)
    return values.astype(np.float32)


class SeriesReader:
    """Lazy reader of the series layout: blocks of (locations, time) read when asked for.

    Opening checks the datasets, the coordinates and the selection with
    :func:`select_series`, as :func:`read_series` does, and keeps the file
    open read-only until :meth:`close`. Values are checked as each block is
    read, by the same rules: features that are missing or outside
    ``valid_range`` raise :class:`DataError` or are filled by the job's
    ``missing_features`` policy, and such targets become NaN. A forward fill
    looks back before the block, so a block reads the same values as the
    same steps of the whole series. Static features are read once, at open.

    Parameters
    ----------
    spec : dict
        The ``data`` section of a normalized job.
    feature_names : sequence of str
    target_names : sequence of str, default=()
    static_names : sequence of str, default=()
        Datasets shaped (location,), repeated at every step and appended to the features.

    Attributes
    ----------
    n_series, n_times : int
        Selected locations and time steps; blocks are indexed within them.
    feature_names : list of str
        Time-varying features, then static features.
    target_names : list of str
    location_ids : ndarray
    location_dim : str
    time_values : ndarray
    time_attrs, units : dict
    file : str
    time_start : int
        Index in the file of the first selected step.
    chunk_series : int
        Chunk length of the first feature along locations, 1 when it is not chunked.
    filled_features, masked_targets : int
        Missing feature values filled and target values masked in the blocks read so far.
    """

    def __init__(self, spec, feature_names, target_names=(), static_names=()):
        self.spec = spec
        self.file = spec["file"]
        self._dynamic_names = list(feature_names)
        self.feature_names = list(feature_names) + list(static_names)
        self.target_names = list(target_names)
        self.axis_order = spec.get("axis_order", "location,time")
        self.filled_features = 0
        self.masked_targets = 0
        self._h5file = open_hdf5(self.file)
        try:
            self._open_datasets(list(static_names))
        except BaseException:
            self._h5file.close()
            raise

    def _open_datasets(self, static_names):
        h5file, path = self._h5file, self.file
        selection = select_series(h5file, self.spec, self._dynamic_names + self.target_names)
        self._datasets = selection.datasets
        self._rows = selection.rows
        self.location_ids = selection.location_ids[selection.rows]
        self.location_dim = selection.location_dim
        self.time_start = selection.start
        self.n_series = len(selection.rows)
        self.n_times = selection.stop - selection.start
        time_coord = selection.time_coord
        if time_coord is not None:
            self.time_values = time_coord[selection.start : selection.stop]
            self.time_attrs = {k: _attr_text(v) for k, v in time_coord.attrs.items() if k in ("units", "calendar", "standard_name", "long_name")}
        else:
            self.time_values = np.arange(selection.start, selection.stop)
            self.time_attrs = {}
        self.units = {ds.name.strip("/"): _attr_text(ds.attrs["units"]) for ds in self._datasets if "units" in ds.attrs}
        self._static = np.stack(
            [
                read_static(get_dataset(h5file, name), selection.rows, selection.n_locations, self.spec, self.location_ids)
                for name in static_names
            ],
            axis=-1,
        ) if static_names else None
        first = self._datasets[0]
        location_axis = 0 if self.axis_order == "location,time" else 1
        self.chunk_series = first.chunks[location_axis] if first.chunks else 1
        for dataset in self._datasets:
            if dataset.dtype != np.float32:
                logger.info("%s: dataset %s is %s; blocks are cast to float32 as they are read", path, dataset.name, dataset.dtype)

    def read(self, rows, start, stop, count_stop=None):
        """Read features and targets of locations ``rows`` over steps ``[start, stop)``.

        Parameters
        ----------
        rows : slice or ndarray of int
            Positions among the selected locations.
        start, stop : int
            Steps relative to the selected time range.
        count_stop : int, optional
            Count filled and masked values only before this step, so that
            overlapping blocks count each step once; all steps when absent.

        Returns
        -------
        features : ndarray of shape (n_rows, stop - start, n_features), float32
            Time-varying features, then static features.
        targets : ndarray of shape (n_rows, stop - start, n_targets), float32, or None
            NaN where a target is missing or invalid.
        """
        file_rows = self._rows[rows]
        location_ids = self.location_ids[rows]
        time_slice = slice(self.time_start + start, self.time_start + stop)
        counted = slice(0, (count_stop if count_stop is not None else stop) - start)

        def describe_position(position):
            return series_position(self.location_dim, location_ids[position[0]], self.time_start + start + position[1])

        blocks = [_as_float32(_read_series_block(ds, file_rows, time_slice, self.axis_order), ds, describe_position) for ds in self._datasets]
        n_dynamic = len(self._dynamic_names)
        if self._static is not None:
            blocks[n_dynamic:n_dynamic] = [np.repeat(self._static[rows][:, None, k], stop - start, axis=1) for k in range(self._static.shape[1])]
        n_features = len(self.feature_names)

        features = np.stack(blocks[:n_features], axis=-1)
        invalid = np.stack([_mask_invalid(features[..., k], name, self.spec) for k, name in enumerate(self.feature_names)], axis=-1)
        if invalid.any():
            features = self._fill(features, invalid, file_rows, location_ids, start)
            self.filled_features += int(invalid[:, counted].sum())

        targets = None
        if self.target_names:
            targets = np.stack(blocks[n_features:], axis=-1)
            for k, name in enumerate(self.target_names):
                bad = _mask_invalid(targets[..., k], name, self.spec)
                targets[..., k][bad] = np.nan
                self.masked_targets += int(bad[:, counted].sum())
        return features, targets

    def _fill(self, features, invalid, file_rows, location_ids, start):
        policy = self.spec.get("missing_features", "error")
        if policy == "error":
            _handle_missing_features(features, invalid, self.feature_names, self.spec, location_ids, self.time_start + start, self.file, self.location_dim)
        values = np.where(invalid, np.nan, features)
        if policy == "ffill":
            carried = np.full((len(file_rows), 1, len(self.feature_names)), np.nan, np.float32)
            if start > 0:
                for k in np.flatnonzero(invalid[:, 0, : len(self._dynamic_names)].any(axis=0)):
                    carried[:, 0, k] = self._last_valid_before(k, file_rows, self.time_start + start)
            values = _forward_fill(np.concatenate([carried, values], axis=1))[:, 1:]
        return np.nan_to_num(values, nan=0.0).astype(np.float32)

    def _last_valid_before(self, feature, file_rows, before):
        """Return each row's last valid value of time-varying ``feature`` before file step ``before``, NaN where none."""
        dataset, name = self._datasets[feature], self.feature_names[feature]
        found = np.full(len(file_rows), np.nan, np.float32)
        pending = np.arange(len(file_rows))
        stop = before
        while len(pending) and stop > self.time_start:
            start = max(self.time_start, stop - LOOKBACK_STEPS)
            values = _read_series_block(dataset, file_rows[pending], slice(start, stop), self.axis_order)
            values = _as_float32(values, dataset, None)
            valid = ~_mask_invalid(values, name, self.spec)
            has_valid = valid.any(axis=1)
            last = values.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
            found[pending[has_valid]] = values[has_valid, last[has_valid]]
            pending = pending[~has_valid]
            stop = start
        return found

    def close(self):
        """Close the file."""
        self._h5file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

class ArrayReader:
    """In-memory data behind the interface of :class:`SeriesReader`.

    Serves the samples layout, read whole by :func:`read_samples`: each sample
    is a series of ``timesteps`` steps. Targets shaped (samples, targets) are
    returned whole, whatever the steps asked for.
    """

    def __init__(self, data):
        self.file = data.file
        self.feature_names = data.feature_names
        self.target_names = data.target_names
        self.units = data.units
        self.n_series, self.n_times = data.features.shape[:2]
        self.chunk_series = 1
        self.filled_features = 0
        self.masked_targets = data.masked_targets
        self._features = data.features
        self._targets = data.targets

    def read(self, rows, start, stop, count_stop=None):
        """Return features and targets of series ``rows`` over steps ``[start, stop)``; see :meth:`SeriesReader.read`."""
        features = self._features[rows, start:stop]
        targets = self._targets[rows] if self._targets.ndim == 2 else self._targets[rows, start:stop]
        return features, targets

    def close(self):
        """Do nothing; the arrays stay in memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
