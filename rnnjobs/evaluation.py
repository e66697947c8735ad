"""Evaluation: scores of a forecast file against observations, with persistence and climatology as baselines.

A forecast file from ``rnnjobs forecast`` is paired with observations by
location id and time value. When a forecast start is given, the steps from it
on are the forecast, and the steps before it are the known past. Two baselines
are then scored on the same points as the forecast:

- **persistence**: the last valid observation before the forecast start,
  carried forward;
- **climatology**: the mean of the valid observations before the forecast
  start, per location.

Lead time is counted in steps: the first forecast step has lead time 1.
Observations that are NaN, infinite, absent from the observation file or
outside the valid range are excluded from every score and counted.
"""

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from rnnjobs.data import DataError, _attr_text, _decode_ids, _dimension_scale, check_numeric, get_dataset, open_hdf5, to_float32
from rnnjobs.timeaxis import format_time

logger = logging.getLogger(__name__)

FORECAST = "forecast"
PERSISTENCE = "persistence"
CLIMATOLOGY = "climatology"
METRICS = ("rmse", "mae", "bias")


@dataclass
class StationSeries:
    """One variable on (location, time) read from an HDF5 file, with its coordinates.

    Attributes
    ----------
    values : ndarray of shape (n_locations, n_times), float64
        NaN where the file has NaN or infinite values.
    location_ids : ndarray of shape (n_locations,), str
    location_dim : str
    time_values : ndarray of shape (n_times,)
    time_units : str or None
    calendar : str or None
    units : str or None
        The ``units`` attribute of the variable.
    file, name : str
    """

    values: np.ndarray
    location_ids: np.ndarray
    location_dim: str
    time_values: np.ndarray
    time_units: str | None
    calendar: str | None
    units: str | None
    file: str
    name: str


@dataclass
class Comparison:
    """Forecast and observed values paired on the forecast's locations and times.

    Attributes
    ----------
    variable : str
        Name of the forecast variable.
    units : str or None
    location_dim : str
        Name of the location dimension, such as ``"station"``.
    location_ids : ndarray of shape (n_locations,), str
    time_values : ndarray of shape (n_times,)
        The forecast file's time coordinate.
    time_units, calendar : str or None
    forecast : ndarray of shape (n_locations, n_times), float64
    observed : ndarray of shape (n_locations, n_times), float64
        NaN where the observation is excluded.
    missing : ndarray of shape (n_locations, n_times), bool
        The observation is NaN, infinite, or absent from the observation file.
    out_of_range : ndarray of shape (n_locations, n_times), bool
        The observation is finite but outside ``valid_range``.
    period : slice
        The time steps to score.
    forecast_start : int or None
        Index of the first forecast step; the baselines exist only when it is set.
    persistence, climatology : ndarray of shape (n_locations,) or None
        The baseline value of each location; NaN where no valid observation precedes the forecast start.
    valid_range : tuple of float or None
    forecast_file, observed_file : str
    """

    variable: str
    units: str | None
    location_dim: str
    location_ids: np.ndarray
    time_values: np.ndarray
    time_units: str | None
    calendar: str | None
    forecast: np.ndarray
    observed: np.ndarray
    missing: np.ndarray
    out_of_range: np.ndarray
    period: slice
    forecast_start: int | None
    persistence: np.ndarray | None
    climatology: np.ndarray | None
    valid_range: tuple | None
    forecast_file: str
    observed_file: str

    @property
    def prediction_names(self):
        """Names of the scored predictions: the forecast, then the baselines if there is a forecast start."""
        return (FORECAST,) if self.forecast_start is None else (FORECAST, PERSISTENCE, CLIMATOLOGY)

    def predicted_values(self):
        """Return the values of every prediction as an array of shape (n_predictions, n_locations, n_times)."""
        stacked = [self.forecast]
        if self.forecast_start is not None:
            shape = self.forecast.shape
            stacked.append(np.broadcast_to(self.persistence[:, None], shape))
            stacked.append(np.broadcast_to(self.climatology[:, None], shape))
        return np.stack(stacked)

    def scored_errors(self):
        """Return the errors in the period and where they are scored.

        Every prediction is scored on the same points: those with a valid
        observation, a forecast value and, when there is a forecast start,
        both baselines.

        Returns
        -------
        errors : ndarray of shape (n_predictions, n_locations, n_period_steps)
            Prediction minus observation.
        scored : ndarray of shape (n_locations, n_period_steps), bool
        """
        observed = self.observed[:, self.period]
        predictions = self.predicted_values()[:, :, self.period]
        scored = np.isfinite(observed) & np.isfinite(predictions).all(axis=0)
        return predictions - observed[None], scored


@dataclass
class Evaluation:
    """RMSE, MAE and bias of a forecast and its baselines, overall, per location and per lead time.

    Errors are prediction minus observation, so a positive bias means the
    prediction is too high. Every score array has the predictions on its first
    axis, in the order of ``predictions``.

    Attributes
    ----------
    variable : str
    units : str or None
    predictions : tuple of str
        ``forecast``, and ``persistence`` and ``climatology`` if there is a forecast start.
    location_dim : str
    location_ids : ndarray of shape (n_locations,)
    lead_times : ndarray of shape (n_leads,) or None
        Steps after the last step before the forecast start; None without a forecast start.
    overall : dict
        ``rmse``, ``mae`` and ``bias`` of shape (n_predictions,), and ``count``, an int.
    by_location : dict
        ``rmse``, ``mae`` and ``bias`` of shape (n_predictions, n_locations), and
        ``count``, ``missing`` and ``out_of_range`` of shape (n_locations,).
    by_lead_time : dict or None
        ``rmse``, ``mae`` and ``bias`` of shape (n_predictions, n_leads), and ``count`` of shape (n_leads,).
    excluded : dict
        Observations in the period left out of every score: ``missing``,
        ``out_of_range``, ``no_forecast`` (the forecast is NaN) and
        ``no_baseline`` (no valid observation before the forecast start).
    attributes : dict
        Files, period and settings of the evaluation, as JSON data.
    """

    variable: str
    units: str | None
    predictions: tuple
    location_dim: str
    location_ids: np.ndarray
    lead_times: np.ndarray | None
    overall: dict
    by_location: dict
    by_lead_time: dict | None
    excluded: dict
    attributes: dict = field(default_factory=dict)


def read_station_series(path, name):
    """Read variable ``name`` on (location, time) with its coordinates from an HDF5 file.

    The location and time coordinates are the dimension scales attached to the
    variable, as in netCDF files and in the forecast files rnnjobs writes.
    Without them, location ids and times are the indices.

    Returns
    -------
    StationSeries

    Raises
    ------
    DataError
        If the file or the variable is missing, the variable is not numeric
        and 2-D, or the coordinates do not match its shape.
    """
    with open_hdf5(path) as h5file:
        dataset = get_dataset(h5file, name)
        check_numeric(dataset)
        if dataset.ndim != 2:
            raise DataError(f"{path}: dataset {name!r} has shape {dataset.shape}, expected 2 dimensions (location, time)")
        n_locations, n_times = dataset.shape
        # NOTE: the whole variable is read into memory as float64, 8 bytes per value.
        values = to_float32(dataset[()], dataset).astype(np.float64)
        values[~np.isfinite(values)] = np.nan

        location_coord = _dimension_scale(dataset, 0)
        time_coord = _dimension_scale(dataset, 1)
        has_coordinates = location_coord is not None and time_coord is not None
        if has_coordinates and (len(location_coord), len(time_coord)) == (n_times, n_locations) and n_times != n_locations:
            raise DataError(
                f"{path}: dataset {name!r} has shape {dataset.shape} but its coordinates are (time, location); "
                "rnnjobs evaluates only variables stored as (location, time)"
            )
        location_ids = np.arange(n_locations) if location_coord is None else _decode_ids(location_coord[()])
        location_dim = "location" if location_coord is None else location_coord.name.strip("/")
        time_values = np.arange(n_times) if time_coord is None else time_coord[()]
        time_attrs = {} if time_coord is None else time_coord.attrs
        time_units = _attr_text(time_attrs["units"]) if "units" in time_attrs else None
        calendar = _attr_text(time_attrs["calendar"]) if "calendar" in time_attrs else None
        units = _attr_text(dataset.attrs["units"]) if "units" in dataset.attrs else None

    if len(location_ids) != n_locations or len(time_values) != n_times:
        raise DataError(
            f"{path}: dataset {name!r} has shape {(n_locations, n_times)} but its coordinates have "
            f"{len(location_ids)} locations and {len(time_values)} times"
        )
    return StationSeries(
        values=values,
        location_ids=np.asarray([str(value) for value in location_ids], dtype=object),
        location_dim=location_dim,
        time_values=np.asarray(time_values),
        time_units=time_units,
        calendar=calendar,
        units=units,
        file=path,
        name=name,
    )


def forecast_variables(path):
    """Return the names of a forecast file's forecast variables, which are its 2-D datasets."""
    with open_hdf5(path) as h5file:
        return [name for name, item in h5file.items() if getattr(item, "ndim", 0) == 2]


def held_out_locations(forecast_file):
    """Return the forecast's location ids that the model never saw in training or validation.

    The model file is the one named in the forecast file's ``model_file`` attribute.

    Raises
    ------
    DataError
        If the forecast file names no model file, the model file is missing,
        or it was trained on the samples layout, which has no location ids.
    """
    from rnnjobs.modelfile import read_model_metadata

    with open_hdf5(forecast_file) as h5file:
        model_file = h5file.attrs.get("model_file")
    if model_file is None:
        raise DataError(f"{forecast_file}: no model_file attribute, so the held-out locations are unknown; select locations by id instead")
    metadata = read_model_metadata(_attr_text(model_file))
    summary = metadata.get("data", {})
    if summary.get("layout") != "series":
        raise DataError(f"{metadata['path']}: the model was trained on ready-made samples, which have no location ids; select locations by id instead")
    seen = set(summary.get("train_locations", [])) | set(summary.get("validation_locations", []))
    forecast = read_station_series(forecast_file, forecast_variables(forecast_file)[0])
    held_out = [value for value in forecast.location_ids if value not in seen]
    if not held_out:
        raise DataError(
            f"{forecast_file}: the model file {metadata['path']} lists every {forecast.location_dim} of the "
            "forecast for training or validation, so none is held out"
        )
    return held_out


def compare_with_observations(
    forecast_file,
    observed_file,
    variable=None,
    *,
    observed_variable=None,
    valid_range=None,
    locations=None,
    forecast_start=None,
    start=None,
    stop=None,
):
    """Pair a forecast file with observations on the forecast's locations and times.

    Parameters
    ----------
    forecast_file : str
        Forecast file written by ``rnnjobs forecast``.
    observed_file : str
        HDF5 file with the observed variable on (location, time) and the same
        location ids and time units as the forecast.
    variable : str, optional
        Forecast variable; by default the forecast file's only variable.
    observed_variable : str, optional
        Observed variable; by default the same name as ``variable``.
    valid_range : (float, float), optional
        Observations outside ``[min, max]`` are excluded and counted.
    locations : sequence of str, optional
        Location ids to keep, in this order; by default all the forecast's locations.
    forecast_start : int, optional
        Index in the forecast's time axis of the first forecast step. Steps
        before it are the known past, from which the baselines come.
    start, stop : int, optional
        Time indices of the scored period, stop excluded. ``start`` defaults
        to ``forecast_start`` (or 0) and may not precede it.

    Returns
    -------
    Comparison

    Raises
    ------
    DataError
        If the files, variables, locations or time units do not match, or
        the period is empty.
    """
    variable = variable or _only_variable(forecast_file)
    forecast = read_station_series(forecast_file, variable)
    observed = read_station_series(observed_file, observed_variable or variable)
    _check_time_units(forecast, observed)

    rows = np.arange(len(forecast.location_ids))
    if locations is not None:
        rows = location_indices(locations, forecast.location_ids, forecast.file, forecast.location_dim, "select ids that the forecast contains")
    forecast_values = forecast.values[rows]
    location_ids = forecast.location_ids[rows]
    observed_rows = location_indices(
        location_ids, observed.location_ids, observed.file, observed.location_dim,
        f"these forecast locations have no observations of {observed.name!r}, so select the others",
    )
    period, forecast_start = _period(forecast, forecast_start, start, stop)

    # Observations on the forecast's time axis; times absent from the observation file stay NaN.
    n_times = len(forecast.time_values)
    observed_values = np.full((len(rows), n_times), np.nan)
    positions, found = _time_positions(forecast.time_values, observed)
    observed_values[:, found] = observed.values[observed_rows][:, positions[found]]
    if not found.all():
        logger.info("%s: %d of %d forecast times have no observation in %s", forecast_file, int((~found).sum()), n_times, observed_file)

    missing = np.isnan(observed_values)
    out_of_range = _outside(observed_values, valid_range)
    observed_values[out_of_range] = np.nan

    persistence = climatology = None
    if forecast_start is not None:
        persistence, climatology = _baselines(observed, observed_rows, forecast.time_values[forecast_start], valid_range)

    return Comparison(
        variable=variable,
        units=forecast.units or observed.units,
        location_dim=forecast.location_dim,
        location_ids=location_ids,
        time_values=forecast.time_values,
        time_units=forecast.time_units,
        calendar=forecast.calendar,
        forecast=forecast_values,
        observed=observed_values,
        missing=missing,
        out_of_range=out_of_range,
        period=period,
        forecast_start=forecast_start,
        persistence=persistence,
        climatology=climatology,
        valid_range=None if valid_range is None else tuple(float(v) for v in valid_range),
        forecast_file=forecast_file,
        observed_file=observed_file,
    )


def _only_variable(forecast_file):
    names = forecast_variables(forecast_file)
    if len(names) != 1:
        raise DataError(f"{forecast_file}: has {len(names)} forecast variables ({', '.join(names) or 'none'}); name the one to evaluate")
    return names[0]


def _check_time_units(forecast, observed):
    if forecast.time_units and observed.time_units and forecast.time_units != observed.time_units:
        # NOTE: times are matched by value, so files with other units are rejected rather than converted.
        raise DataError(
            f"{observed.file}: time units {observed.time_units!r} differ from the forecast's "
            f"{forecast.time_units!r} in {forecast.file}; write both with the same units"
        )
    times = observed.time_values
    if len(times) > 1 and not np.all(np.diff(times) > 0):
        raise DataError(f"{observed.file}: the time coordinate of {observed.name!r} is not strictly increasing")


def location_indices(requested, location_ids, source, location_dim, hint):
    """Return the index in ``location_ids`` of each id in ``requested``, in the order of ``requested``.

    Raises
    ------
    DataError
        If ``requested`` is empty or has ids not in ``location_ids``; the message
        names ``source``, the first five missing ids and ``hint``.
    """
    if not len(requested):
        raise DataError(f"{source}: no {location_dim} selected")
    lookup = {value: i for i, value in enumerate(location_ids)}
    unknown = [str(value) for value in requested if str(value) not in lookup]
    if unknown:
        raise DataError(
            f"{source}: {len(unknown)} {location_dim} id(s) not found among the {len(lookup)} in the file, "
            f"first {', '.join(unknown[:5])}; {hint}"
        )
    return np.asarray([lookup[str(value)] for value in requested], dtype=np.int64)


def _period(forecast, forecast_start, start, stop):
    n_times = len(forecast.time_values)
    if forecast_start is not None and not 0 <= forecast_start < n_times:
        raise DataError(f"{forecast.file}: forecast start {forecast_start} is outside the {n_times} time steps of the forecast (0 to {n_times - 1})")
    if start is None:
        start = forecast_start or 0
    stop = n_times if stop is None else stop
    if forecast_start is not None and start < forecast_start:
        raise DataError(f"{forecast.file}: period start {start} precedes the forecast start {forecast_start}; scores before it would have no lead time")
    if not 0 <= start < stop <= n_times:
        raise DataError(f"{forecast.file}: period [{start}, {stop}) is empty or outside the {n_times} time steps of the forecast")
    return slice(start, stop), forecast_start


def _time_positions(time_values, observed):
    """Return the index of each forecast time in the observed time axis, and whether that time is present."""
    times = observed.time_values
    positions = np.clip(np.searchsorted(times, time_values), 0, max(len(times) - 1, 0))
    found = times[positions] == time_values if len(times) else np.zeros(len(time_values), dtype=bool)
    return positions, found


def _outside(values, valid_range):
    if valid_range is None:
        return np.zeros(values.shape, dtype=bool)
    low, high = valid_range
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & ((values < low) | (values > high))


def _baselines(observed, rows, start_time, valid_range):
    """Return persistence and climatology per location from the valid observations before ``start_time``."""
    past = observed.values[rows][:, observed.time_values < start_time]
    past = np.where(_outside(past, valid_range), np.nan, past)
    valid = np.isfinite(past)
    has_past = valid.any(axis=1)

    persistence = np.full(len(rows), np.nan)
    if past.shape[1]:
        last = past.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
        persistence = np.where(has_past, past[np.arange(len(rows)), last], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        climatology = np.where(valid, past, 0.0).sum(axis=1) / valid.sum(axis=1)
    return persistence, climatology


def score_errors(errors, scored, axis):
    """Return RMSE, MAE and bias of ``errors`` over ``axis`` where ``scored`` is true, and the counts.

    Parameters
    ----------
    errors : ndarray of shape (n_predictions, n_locations, n_times)
    scored : ndarray of shape (n_locations, n_times), bool
    axis : tuple of int
        Axes of ``errors`` to reduce; 1 or 2 or both, never 0, the predictions.

    Returns
    -------
    scores : dict
        ``rmse``, ``mae`` and ``bias``; NaN where nothing is scored.
    count : ndarray or int
        Number of scored points.
    """
    count = scored.sum(axis=tuple(a - 1 for a in axis))
    kept = np.where(scored, errors, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "rmse": np.sqrt((kept**2).sum(axis=axis) / count),
            "mae": np.abs(kept).sum(axis=axis) / count,
            "bias": kept.sum(axis=axis) / count,
        }, count


def evaluate(comparison):
    """Score the forecast and its baselines in the comparison's period.

    Every prediction is scored on the same points; see :meth:`Comparison.scored_errors`.

    Returns
    -------
    Evaluation

    Raises
    ------
    DataError
        If no observation in the period can be scored.
    """
    period = comparison.period
    errors, scored = comparison.scored_errors()
    predictions = comparison.predicted_values()[:, :, period]
    valid = np.isfinite(comparison.observed[:, period])
    has_forecast = np.isfinite(predictions[0])
    excluded = {
        "missing": int(comparison.missing[:, period].sum()),
        "out_of_range": int(comparison.out_of_range[:, period].sum()),
        "no_forecast": int((valid & ~has_forecast).sum()),
        "no_baseline": int((valid & has_forecast & ~scored).sum()),
    }

    overall, count = score_errors(errors, scored, (1, 2))
    by_location, location_count = score_errors(errors, scored, (2,))
    by_location.update(
        count=location_count,
        missing=comparison.missing[:, period].sum(axis=1),
        out_of_range=comparison.out_of_range[:, period].sum(axis=1),
    )
    by_lead_time, lead_times = None, None
    if comparison.forecast_start is not None:
        by_lead_time, lead_count = score_errors(errors, scored, (1,))
        by_lead_time["count"] = lead_count
        lead_times = np.arange(period.start, period.stop) - comparison.forecast_start + 1

    if not count:
        raise DataError(
            f"{comparison.observed_file}: no valid observation of {comparison.variable!r} in the period "
            f"[{period.start}, {period.stop}); excluded: {excluded_text(excluded, comparison.valid_range)}"
        )
    logger.info(
        "%s: scored %d observation(s) at %d location(s); excluded %s",
        comparison.forecast_file, int(count), len(comparison.location_ids), excluded_text(excluded, comparison.valid_range),
    )
    overall["count"] = int(count)
    return Evaluation(
        variable=comparison.variable,
        units=comparison.units,
        predictions=comparison.prediction_names,
        location_dim=comparison.location_dim,
        location_ids=comparison.location_ids,
        lead_times=lead_times,
        overall=overall,
        by_location=by_location,
        by_lead_time=by_lead_time,
        excluded=excluded,
        attributes=_attributes(comparison),
    )


def evaluate_forecast(forecast_file, observed_file, variable=None, **options):
    """Pair a forecast file with observations and score it; see :func:`compare_with_observations` for the options.

    Returns
    -------
    Evaluation
    """
    return evaluate(compare_with_observations(forecast_file, observed_file, variable, **options))


def _attributes(comparison):
    period = comparison.period
    times = comparison.time_values
    attributes = {
        "forecast_file": os.path.abspath(comparison.forecast_file),
        "observed_file": os.path.abspath(comparison.observed_file),
        "variable": comparison.variable,
        "period_start": period.start,
        "period_stop": period.stop,
        "period_first_time": format_time(times, period.start, comparison.time_units, comparison.calendar),
        "period_last_time": format_time(times, period.stop - 1, comparison.time_units, comparison.calendar),
        "valid_range": "none" if comparison.valid_range is None else json.dumps(list(comparison.valid_range)),
    }
    if comparison.forecast_start is not None:
        attributes["forecast_start"] = comparison.forecast_start
        attributes["forecast_start_time"] = format_time(times, comparison.forecast_start, comparison.time_units, comparison.calendar)
    return attributes


def excluded_text(excluded, valid_range):
    outside = "outside the valid range" if valid_range is None else f"outside [{valid_range[0]:g}, {valid_range[1]:g}]"
    return (
        f"{excluded['missing']} missing, {excluded['out_of_range']} {outside}, "
        f"{excluded['no_forecast']} without forecast, {excluded['no_baseline']} without baseline"
    )
