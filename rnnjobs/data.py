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
        raise DataError(f"{path}: not an HDF5 file (no HDF5 signature); check the path and the file format")
    try:
        return h5py.File(path, "r")
    except BlockingIOError as err:
        raise DataError(f"{path}: cannot lock the file ({err}); {LOCKING_HINT}") from err
    except OSError as err:
        text = str(err)
        if "lock" in text.lower():
            raise DataError(f"{path}: cannot lock the file ({text}); {LOCKING_HINT}") from err
        raise DataError(f"{path}: cannot be opened as HDF5, the file may be truncated or damaged ({text})") from err


def get_dataset(h5file, name):
    """Return dataset ``name`` of an open file, or raise :class:`DataError` listing those present."""
    if name not in h5file or not isinstance(h5file[name], h5py.Dataset):
        present = []
        h5file.visititems(lambda key, obj: present.append(key) if isinstance(obj, h5py.Dataset) else None)
        raise DataError(f"{h5file.filename}: dataset {name!r} not found; datasets in the file: {', '.join(present) or 'none'}")
    return h5file[name]


def check_numeric(dataset):
    """Raise :class:`DataError` unless ``dataset`` holds integers or floating-point numbers."""
    kind = dataset.dtype.kind
    if kind not in "iuf":
        raise DataError(
            f"{dataset.file.filename}: dataset {dataset.name!r} has dtype {dataset.dtype}, "
            "expected integer or floating-point numbers"
        )


def to_float32(values, dataset):
    """Cast values read from ``dataset`` to float32, rejecting finite values beyond its range."""
    if values.dtype == np.float32:
        return values
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        too_large = finite & (np.abs(values) > FLOAT32_MAX)
        if too_large.any():
            position = tuple(int(i) for i in np.argwhere(too_large)[0])
            raise DataError(
                f"{dataset.file.filename}: dataset {dataset.name!r} has {int(too_large.sum())} value(s) "
                f"beyond the float32 range (+-{FLOAT32_MAX:.3g}), first at index {position}: "
                f"{values[position]!r}; rescale the data"
            )
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
        block = dataset[time_slice, sorted_rows].T
    else:
        block = dataset[sorted_rows, time_slice]
    restored = np.empty_like(block)
    restored[order] = block
    return restored


def _check_series_shape(dataset, expected, spec):
    if dataset.ndim != 2:
        raise DataError(
            f"{dataset.file.filename}: dataset {dataset.name!r} has shape {dataset.shape}, "
            "expected 2 dimensions (location, time)"
        )
    shape = dataset.shape if spec.get("axis_order", "location,time") == "location,time" else dataset.shape[::-1]
    if expected is not None and shape != expected:
        raise DataError(
            f"{dataset.file.filename}: dataset {dataset.name!r} has shape {shape} as (location, time), "
            f"expected {expected} like the first feature"
        )
    return shape


def _mask_invalid(values, name, spec):
    low, high = spec.get("valid_range", {}).get(name, (-np.inf, np.inf))
    with np.errstate(invalid="ignore"):
        invalid = ~np.isfinite(values) | (values < low) | (values > high)
    return invalid


def _handle_missing_features(values, invalid, names, spec, location_ids, time_start, path):
    count = int(invalid.sum())
    if not count:
        return values
    policy = spec.get("missing_features", "error")
    first = np.argwhere(invalid)[0]
    if policy == "error":
        where = f"location {location_ids[first[0]]!r}, time index {time_start + int(first[1])}"
        raise DataError(
            f"{path}: dataset {names[first[2]]!r} has {count} missing or invalid value(s) "
            f"(NaN, infinite or outside valid_range), first at {where}; clean the data or set "
            "data.missing_features to 'ffill' or 'zero'"
        )
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
        datasets = [get_dataset(h5file, name) for name in list(feature_names) + list(target_names)]
        shape = None
        for dataset in datasets:
            check_numeric(dataset)
            shape = _check_series_shape(dataset, shape, spec)
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

        location_ids = _decode_ids(location_coord[()]) if location_coord is not None else np.arange(n_locations)
        location_dim = location_coord.name.strip("/") if location_coord is not None else "location"
        rows = _select_locations(spec, location_ids, path)

        time_range = spec.get("time", {})
        start = time_range.get("start", 0)
        stop = time_range.get("stop", n_times)
        if stop > n_times or start >= stop:
            raise DataError(f"{path}: data.time [{start}, {stop}) is outside the {n_times} time steps of {first.name!r}")
        time_slice = slice(start, stop)

        blocks = []
        for dataset in datasets:
            values = _read_rows(dataset, rows, time_slice, axis_order)
            blocks.append(to_float32(values, dataset))
        for name in static_names:
            values = _read_static(get_dataset(h5file, name), rows, n_locations)
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
    features = _handle_missing_features(features, invalid, list(feature_names), spec, location_ids[rows], start, path)

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


def _read_static(dataset, rows, n_locations):
    check_numeric(dataset)
    if dataset.shape != (n_locations,):
        raise DataError(
            f"{dataset.file.filename}: static feature dataset {dataset.name!r} has shape {dataset.shape}, "
            f"expected ({n_locations},): one value per location"
        )
    return to_float32(dataset[()][rows], dataset)


def _check_axis_order(dataset, location_coord, time_coord, n_locations, n_times, path):
    lengths = (
        len(location_coord) if location_coord is not None else None,
        len(time_coord) if time_coord is not None else None,
    )
    if lengths == (n_times, n_locations) and n_times != n_locations:
        raise DataError(
            f"{path}: dataset {dataset.name!r} has shape {dataset.shape} but the location coordinate has "
            f"{lengths[0]} values and the time coordinate {lengths[1]}; the axes look reversed (as written by "
            "column-major code such as MATLAB or Fortran); set data.axis_order to 'time,location'"
        )


def _attr_text(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.size == 1:
        return _attr_text(value.item())
    return str(value)


def read_samples(spec):
    """Read ready-made samples ``X (samples, timesteps, features)`` and ``y``.

    Returns
    -------
    SampleData
    """
    path = spec["file"]
    with open_hdf5(path) as h5file:
        x_dataset = get_dataset(h5file, spec["x"])
        y_dataset = get_dataset(h5file, spec.get("y", "y"))
        for dataset in (x_dataset, y_dataset):
            check_numeric(dataset)
        if x_dataset.ndim != 3:
            raise DataError(f"{path}: dataset {x_dataset.name!r} has shape {x_dataset.shape}, expected (samples, timesteps, features)")
        if y_dataset.ndim not in (2, 3) or y_dataset.shape[0] != x_dataset.shape[0]:
            raise DataError(
                f"{path}: dataset {y_dataset.name!r} has shape {y_dataset.shape}, expected "
                f"({x_dataset.shape[0]}, timesteps, targets) or ({x_dataset.shape[0]}, targets)"
            )
        if y_dataset.ndim == 3 and y_dataset.shape[1] != x_dataset.shape[1]:
            raise DataError(f"{path}: dataset {y_dataset.name!r} has {y_dataset.shape[1]} timesteps, X has {x_dataset.shape[1]}")
        features = to_float32(x_dataset[()], x_dataset)
        targets = to_float32(y_dataset[()], y_dataset)
        x_name, y_name = x_dataset.name, y_dataset.name

    feature_names = spec.get("features") or [f"{x_name.strip('/')}[{k}]" for k in range(features.shape[-1])]
    target_names = spec.get("targets") or [f"{y_name.strip('/')}[{k}]" for k in range(targets.shape[-1])]
    for names, array, label in ((feature_names, features, "data.features"), (target_names, targets, "data.targets")):
        if len(names) != array.shape[-1]:
            raise DataError(f"{path}: {label} names {len(names)} variable(s) but the dataset has {array.shape[-1]}")

    invalid = np.zeros(features.shape, dtype=bool)
    for k, name in enumerate(feature_names):
        invalid[..., k] = _mask_invalid(features[..., k], name, spec)
    if invalid.any() and spec.get("missing_features", "error") == "error":
        first = tuple(int(i) for i in np.argwhere(invalid)[0])
        raise DataError(
            f"{path}: dataset {x_name!r} has {int(invalid.sum())} missing or invalid value(s) (NaN, infinite "
            f"or outside valid_range), first at (sample, timestep, feature) {first}; clean the data or set "
            "data.missing_features to 'ffill' or 'zero'"
        )
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
