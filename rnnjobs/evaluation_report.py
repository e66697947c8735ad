"""Evaluation reports: the text table and the CSV and netCDF4-compatible score files."""

import csv
import json
import logging
import os

import numpy as np

from rnnjobs.evaluation import METRICS, excluded_text

logger = logging.getLogger(__name__)

NETCDF_SUFFIXES = (".nc", ".nc4", ".h5", ".hdf5")


def format_evaluation(evaluation, by=()):
    """Return the evaluation as text: a summary and the overall scores, then the RMSE tables that ``by`` names.

    Parameters
    ----------
    evaluation : Evaluation
    by : sequence of {"location", "lead_time"}, default=()
        Add a table of each prediction's RMSE per location or per lead time. The
        files of :func:`write_evaluation` contain every score.
    """
    attributes = evaluation.attributes
    units = f" ({evaluation.units})" if evaluation.units else ""
    n_steps = attributes["period_stop"] - attributes["period_start"]
    lines = [
        f"{evaluation.variable}{units}: {os.path.basename(attributes['forecast_file'])} against {os.path.basename(attributes['observed_file'])}",
        f"period: {n_steps} steps, {attributes['period_first_time']} to {attributes['period_last_time']} "
        f"(time indices {attributes['period_start']} to {attributes['period_stop'] - 1})",
    ]
    if "forecast_start" in attributes:
        lines.append("baselines: last valid observation and mean of valid observations before the forecast start")
    else:
        lines.append("baselines: none (they need a forecast start)")
    lines.append(
        f"scored: {evaluation.overall['count']} observations at {len(evaluation.location_ids)} "
        f"{evaluation.location_dim}(s); excluded: {excluded_text(evaluation.excluded, _valid_range(attributes))}"
    )
    lines.append("")

    rows = [[name, *(evaluation.overall[m][k] for m in METRICS), evaluation.overall["count"]] for k, name in enumerate(evaluation.predictions)]
    lines.extend(_table(["prediction", "RMSE", "MAE", "bias", "count"], rows))

    breakdowns = []
    if "location" in by:
        breakdowns.append((evaluation.location_dim, evaluation.location_ids, evaluation.by_location))
    if "lead_time" in by and evaluation.by_lead_time is not None:
        breakdowns.append(("lead_time", evaluation.lead_times, evaluation.by_lead_time))
    for label, keys, scores in breakdowns:
        rows = [[key, scores["count"][i], *scores["rmse"][:, i]] for i, key in enumerate(keys)]
        lines.append("")
        lines.extend(_table([label, "count", *(f"RMSE {name}" for name in evaluation.predictions)], rows))
    return "\n".join(lines) + "\n"


def _valid_range(attributes):
    text = attributes.get("valid_range", "none")
    return None if text == "none" else tuple(json.loads(text))


def _table(header, rows):
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(text) for text in column) for column in zip(header, *cells)]
    return ["  ".join(f"{text:<{w}}" if i == 0 else f"{text:>{w}}" for i, (text, w) in enumerate(zip(row, widths))) for row in [header, *cells]]


def _cell(value):
    if isinstance(value, (float, np.floating)):
        return "nan" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def write_evaluation(evaluation, path):
    """Write the evaluation to ``path``: CSV if it ends in ``.csv``, else netCDF4-compatible HDF5.

    The CSV file is a long table with the columns ``scope`` (``overall``,
    ``location`` or ``lead_time``), the location id, ``lead_time``,
    ``prediction``, ``rmse``, ``mae``, ``bias`` and ``count``.

    Raises
    ------
    ValueError
        If the file name ends in neither ``.csv`` nor one of ``.nc``, ``.nc4``, ``.h5``, ``.hdf5``.
    """
    from rnnjobs.output import atomic_output

    suffix = os.path.splitext(path)[1].lower()
    if suffix != ".csv" and suffix not in NETCDF_SUFFIXES:
        raise ValueError(f"{path}: unknown output format {suffix!r}; use .csv, or {', '.join(NETCDF_SUFFIXES)} for netCDF4-compatible HDF5")
    with atomic_output(path) as temporary:
        if suffix == ".csv":
            _write_csv(evaluation, temporary)
        else:
            _write_netcdf(evaluation, temporary)
    logger.info("wrote %s", path)


def _write_csv(evaluation, path):
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["scope", evaluation.location_dim, "lead_time", "prediction", *METRICS, "count"])
        for k, name in enumerate(evaluation.predictions):
            writer.writerow(["overall", "", "", name, *(_number(evaluation.overall[m][k]) for m in METRICS), evaluation.overall["count"]])
        for i, location in enumerate(evaluation.location_ids):
            for k, name in enumerate(evaluation.predictions):
                scores = evaluation.by_location
                writer.writerow(["location", location, "", name, *(_number(scores[m][k, i]) for m in METRICS), int(scores["count"][i])])
        if evaluation.by_lead_time is not None:
            for i, lead in enumerate(evaluation.lead_times):
                for k, name in enumerate(evaluation.predictions):
                    scores = evaluation.by_lead_time
                    writer.writerow(["lead_time", "", int(lead), name, *(_number(scores[m][k, i]) for m in METRICS), int(scores["count"][i])])


def _number(value):
    return "nan" if np.isnan(value) else repr(float(value))


def _write_netcdf(evaluation, path):
    import h5netcdf
    import h5py

    location_dim = evaluation.location_dim
    with h5netcdf.File(path, "w") as file:
        file.dimensions = {"prediction": len(evaluation.predictions), location_dim: len(evaluation.location_ids)}
        predictions = file.create_variable("prediction", ("prediction",), dtype=h5py.string_dtype())
        predictions[:] = np.asarray(evaluation.predictions, dtype=object)
        locations = file.create_variable(location_dim, (location_dim,), dtype=h5py.string_dtype())
        locations[:] = np.asarray([str(value) for value in evaluation.location_ids], dtype=object)

        def add(name, dims, values, long_name, units=None):
            variable = file.create_variable(name, dims, data=np.asarray(values))
            variable.attrs["long_name"] = long_name
            if units:
                variable.attrs["units"] = units

        for metric in METRICS:
            add(metric, ("prediction",), evaluation.overall[metric], f"{metric} over all scored observations", evaluation.units)
            add(f"{metric}_by_{location_dim}", ("prediction", location_dim), evaluation.by_location[metric], f"{metric} per {location_dim}", evaluation.units)
        add("count", (), evaluation.overall["count"], "number of scored observations")
        add(f"count_by_{location_dim}", (location_dim,), evaluation.by_location["count"], f"scored observations per {location_dim}")
        add(f"missing_by_{location_dim}", (location_dim,), evaluation.by_location["missing"], f"missing observations per {location_dim}")
        add(f"out_of_range_by_{location_dim}", (location_dim,), evaluation.by_location["out_of_range"], f"observations outside the valid range per {location_dim}")

        if evaluation.by_lead_time is not None:
            file.dimensions["lead_time"] = len(evaluation.lead_times)
            add("lead_time", ("lead_time",), evaluation.lead_times, "steps after the last step before the forecast start", "steps")
            for metric in METRICS:
                add(f"{metric}_by_lead_time", ("prediction", "lead_time"), evaluation.by_lead_time[metric], f"{metric} per lead time", evaluation.units)
            add("count_by_lead_time", ("lead_time",), evaluation.by_lead_time["count"], "scored observations per lead time")

        file.attrs["title"] = f"rnnjobs evaluation of {evaluation.variable}"
        for key, value in evaluation.attributes.items():
            file.attrs[key] = value
        for key, value in evaluation.excluded.items():
            file.attrs[f"excluded_{key}"] = value
