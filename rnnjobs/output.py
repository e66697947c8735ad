"""Output writing: atomic file replacement and the netCDF-compatible forecast file."""

import contextlib
import json
import logging
import os
import tempfile

import numpy as np

logger = logging.getLogger(__name__)

TEMPORARY_MARKER = ".rnnjobs-tmp-"


@contextlib.contextmanager
def atomic_output(path):
    """Give a temporary path beside ``path`` and move it to ``path`` only if the block succeeds.

    The temporary name keeps the final suffix (Keras checks for ``.weights.h5``)
    and contains ``.rnnjobs-tmp-`` so leftovers of a killed run are easy to find.
    On error the temporary file is removed and ``path`` is left as it was.

    Yields
    ------
    str
        The temporary path to write to.

    Raises
    ------
    OSError
        With ``path`` as its file name, if its folder cannot be created or written.
    """
    folder = os.path.dirname(os.path.abspath(path)) or "."
    name = os.path.basename(path)
    suffix = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{name}{TEMPORARY_MARKER}", suffix=suffix, dir=folder)
    except OSError as err:
        raise OSError(err.errno, f"cannot create a file in {folder} ({err.strerror})", path) from err
    os.close(handle)
    os.remove(temporary)  # h5py and Keras create the file themselves.
    try:
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        _fsync_folder(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _fsync_folder(folder):
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def remove_stale_temporaries(path):
    """Delete temporary files that a killed run left beside ``path``; return how many."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    prefix = f".{os.path.basename(path)}{TEMPORARY_MARKER}"
    removed = 0
    if os.path.isdir(folder):
        for entry in os.listdir(folder):
            if entry.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, entry))
                    removed += 1
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run beside %s", removed, path)
    return removed


class ForecastWriter:
    """Writer of a CF ``timeSeries`` forecast file, filled chunk by chunk.

    The file is netCDF4-compatible HDF5 written with h5netcdf: each target is a
    float32 variable on dimensions (location, time), with the location ids and
    times as coordinate variables, so ``xarray.open_dataset(path,
    engine="h5netcdf")`` and ``ncdump`` read it with named dimensions.

    Parameters
    ----------
    path : str
        Temporary path to write (see :func:`atomic_output`).
    location_dim : str
        Name of the location dimension, such as ``"station"``.
    location_ids : ndarray
    time_values : ndarray
    time_attrs : dict
        ``units`` and ``calendar`` of the time coordinate.
    target_names : list of str
    target_units : dict
    attributes : dict
        Global attributes; values that are not strings or numbers are stored as JSON text.
    """

    def __init__(self, path, location_dim, location_ids, time_values, time_attrs, target_names, target_units, attributes):
        import h5netcdf
        import h5py

        self._file = h5netcdf.File(path, "w")
        file = self._file
        file.dimensions = {location_dim: len(location_ids), "time": len(time_values)}
        self._location_dim = location_dim

        if np.asarray(location_ids).dtype.kind in "OUS":
            ids = file.create_variable(location_dim, (location_dim,), dtype=h5py.string_dtype())
            ids[:] = np.asarray([str(value) for value in location_ids], dtype=object)
        else:
            ids = file.create_variable(location_dim, (location_dim,), data=np.asarray(location_ids))
        ids.attrs["cf_role"] = "timeseries_id"
        ids.attrs["long_name"] = f"{location_dim} id"

        times = file.create_variable("time", ("time",), data=np.asarray(time_values))
        for key, value in time_attrs.items():
            times.attrs[key] = value
        if "standard_name" not in times.attrs:
            times.attrs["standard_name"] = "time"

        self._variables = {}
        for name in target_names:
            variable = file.create_variable(
                name,
                (location_dim, "time"),
                dtype="f4",
                fillvalue=np.float32(np.nan),
                chunks=(min(len(location_ids), 1024), min(len(time_values), 1024)) if len(time_values) and len(location_ids) else None,
            )
            variable.attrs["long_name"] = f"forecast of {name}"
            if name in target_units:
                variable.attrs["units"] = target_units[name]
            self._variables[name] = variable

        file.attrs["Conventions"] = "CF-1.8"
        file.attrs["featureType"] = "timeSeries"
        self.write_attributes(attributes)

    def write_location_variable(self, name, values, attributes):
        """Write a float32 variable on the location dimension, such as a per-location correction."""
        variable = self._file.create_variable(name, (self._location_dim,), data=np.asarray(values, dtype=np.float32))
        for key, value in attributes.items():
            variable.attrs[key] = value

    def write_attributes(self, attributes):
        """Set global attributes; values that are not strings or numbers are stored as JSON text."""
        for key, value in attributes.items():
            self._file.attrs[key] = value if isinstance(value, (str, int, float)) else _json(value)

    def write(self, location_slice, time_slice, values):
        """Write ``values`` of shape (locations, times, targets) into the given slices."""
        for k, variable in enumerate(self._variables.values()):
            variable[location_slice, time_slice] = values[..., k]

    def close(self):
        """Flush and close the file."""
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _json(value):
    return json.dumps(value, sort_keys=True, default=str)
