"""Plotting: PNG figures of a forecast against observations; needs matplotlib (``pip install 'rnnjobs[plot]'``)."""

import logging

import numpy as np

from rnnjobs.data import DataError
from rnnjobs.evaluation import PERSISTENCE, evaluate, location_indices, score_errors
from rnnjobs.timeaxis import decode_times, format_time

logger = logging.getLogger(__name__)

HOURS = np.arange(24)


class MissingDependencyError(ImportError):
    """An optional dependency that a function needs is not installed."""


def _new_figure(**options):
    """Return a matplotlib Figure that renders with Agg, without pyplot or a display."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise MissingDependencyError("plotting needs matplotlib, which is not installed; install it with: pip install 'rnnjobs[plot]'") from err
    return Figure(layout="constrained", **options)


def _save_png(figure, path):
    from rnnjobs.output import atomic_output

    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    logger.info("wrote %s", path)


def _plotted_rows(comparison, locations):
    hint = "select ids that the forecast contains"
    return location_indices(locations, comparison.location_ids, comparison.forecast_file, comparison.location_dim, hint)


def _label(comparison):
    return f"{comparison.variable} ({comparison.units})" if comparison.units else comparison.variable


def _period_text(comparison):
    period = comparison.period
    first = format_time(comparison.time_values, period.start, comparison.time_units, comparison.calendar)
    last = format_time(comparison.time_values, period.stop - 1, comparison.time_units, comparison.calendar)
    return f"from {first} to {last}"


def plot_forecast(comparison, locations, path):
    """Write a PNG with one panel per location: forecast, valid observations and, if any, the baselines.

    Each panel title gives the RMSE of every prediction in the comparison's period.
    Excluded observations are not drawn.

    Parameters
    ----------
    comparison : rnnjobs.evaluation.Comparison
    locations : sequence of str
        Location ids, one panel each, in this order.
    path : str
        PNG file to write.
    """
    rows = _plotted_rows(comparison, locations)
    evaluation = evaluate(comparison)
    times = decode_times(comparison.time_values, comparison.time_units, comparison.calendar)
    x = comparison.time_values if times is None else times

    figure = _new_figure(figsize=(10, 1.2 + 2.3 * len(rows)))
    axes = figure.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    for axis, row in zip(axes, rows):
        axis.plot(x, comparison.observed[row], "o", color="black", markersize=2.5, label="observed (valid)")
        axis.plot(x, comparison.forecast[row], color="tab:blue", linewidth=1.5, label="forecast")
        if comparison.forecast_start is not None:
            after = x[comparison.forecast_start:]
            axis.axvline(x[comparison.forecast_start], color="gray", linewidth=1, linestyle=":", label="forecast start")
            axis.plot(after, np.full(len(after), comparison.persistence[row]), color="tab:orange", linestyle="--", label="persistence")
            axis.plot(after, np.full(len(after), comparison.climatology[row]), color="tab:green", linestyle="-.", label="climatology")
        scores = ", ".join(f"{name} {evaluation.by_location['rmse'][k, row]:.2f}" for k, name in enumerate(evaluation.predictions))
        axis.set_title(f"{comparison.location_ids[row]}: RMSE of {scores}", fontsize=10, loc="left")
        axis.set_ylabel(_label(comparison))
        axis.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", fontsize=9, ncols=len(labels))
    figure.suptitle(f"{_label(comparison)}, RMSE {_period_text(comparison)}", fontsize=11)

    if times is None:
        axes[-1].set_xlabel(f"time ({comparison.time_units})" if comparison.time_units else "time index")
    else:
        import matplotlib.dates

        locator = matplotlib.dates.AutoDateLocator()
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(locator))
        axes[-1].set_xlabel("time (UTC)")
    _save_png(figure, path)


def hourly_scores(comparison, locations):
    """Return RMSE and bias by hour of day for each prediction, for ``locations`` and for all locations.

    Hours of day are UTC, decoded from the time coordinate's units.

    Returns
    -------
    dict
        ``locations``: ``{"rmse", "bias"}`` of shape (n_predictions, len(locations), 24);
        ``all``: ``{"rmse", "bias"}`` of shape (n_predictions, 24).

    Raises
    ------
    DataError
        If the time units do not decode to dates, so hours of day are unknown.
    """
    times = decode_times(comparison.time_values, comparison.time_units, comparison.calendar)
    if times is None:
        raise DataError(
            f"{comparison.forecast_file}: time units {comparison.time_units!r} do not decode to dates "
            "(expected '<unit> since <date>' and a Gregorian calendar), so hours of day are unknown"
        )
    hours = (times[comparison.period].astype("datetime64[h]").astype(np.int64) % 24)
    rows = _plotted_rows(comparison, locations)
    errors, scored = comparison.scored_errors()

    by_location = {"rmse": [], "bias": []}
    overall = {"rmse": [], "bias": []}
    for hour in HOURS:
        at_hour = scored & (hours == hour)[None, :]
        location_scores, _ = score_errors(errors[:, rows], at_hour[rows], (2,))
        all_scores, _ = score_errors(errors, at_hour, (1, 2))
        for metric in ("rmse", "bias"):
            by_location[metric].append(location_scores[metric])
            overall[metric].append(all_scores[metric])
    return {
        "locations": {metric: np.stack(values, axis=-1) for metric, values in by_location.items()},
        "all": {metric: np.stack(values, axis=-1) for metric, values in overall.items()},
    }


def plot_error_by_hour(comparison, locations, path):
    """Write a PNG of the forecast's bias and RMSE by hour of day in the comparison's period.

    One line per location in ``locations``, a thick line for all locations
    compared and, if there is a forecast start, a dashed line for persistence
    at all locations.

    Parameters
    ----------
    comparison : rnnjobs.evaluation.Comparison
    locations : sequence of str
    path : str
        PNG file to write.
    """
    scores = hourly_scores(comparison, locations)
    figure = _new_figure(figsize=(10, 6.5))
    axes = figure.subplots(2, 1, sharex=True)
    titles = {"bias": "mean error (forecast - observed)", "rmse": "RMSE"}
    for axis, metric in zip(axes, ("bias", "rmse")):
        for i, location in enumerate(locations):
            axis.plot(HOURS, scores["locations"][metric][0, i], marker=".", linewidth=1, label=location)
        axis.plot(HOURS, scores["all"][metric][0], color="black", linewidth=2.5, label=f"forecast, all {len(comparison.location_ids)}")
        if PERSISTENCE in comparison.prediction_names:
            k = comparison.prediction_names.index(PERSISTENCE)
            axis.plot(HOURS, scores["all"][metric][k], color="gray", linewidth=2, linestyle="--", label=f"persistence, all {len(comparison.location_ids)}")
        if metric == "bias":
            axis.axhline(0.0, color="gray", linewidth=0.8)
        axis.set_ylabel(_label(comparison))
        axis.set_title(titles[metric], fontsize=10, loc="left")
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, ncols=4)
    figure.suptitle(f"{_label(comparison)}, errors by hour of day {_period_text(comparison)}", fontsize=11)
    axes[-1].set_xticks(HOURS[::3])
    axes[-1].set_xlim(-0.5, 23.5)
    axes[-1].set_xlabel("hour of day (UTC)")
    _save_png(figure, path)
