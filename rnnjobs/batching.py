"""Batch plans: which window of which series fills each slot of each training batch.

A plan is pure index bookkeeping, with no data in it, so it can be tested on its
own. Batch ``b`` slot ``s`` reads series ``locations[b, s]`` from time index
``starts[b, s]`` for ``timesteps`` steps; a location of ``-1`` marks a padding
slot whose targets are masked. ``resets[b]`` says that stateful RNN states
must be set to zero before batch ``b``.
"""

import logging
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

PADDING = -1


class BatchPlanError(ValueError):
    """The data does not fill whole batches and the job's remainder policy is ``error``."""


@dataclass
class BatchPlan:
    """Index maps for one epoch; see the module docstring."""

    locations: np.ndarray
    starts: np.ndarray
    resets: np.ndarray
    dropped: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.locations)


def _empty_plan(batch_size):
    empty = np.zeros((0, batch_size), dtype=np.int64)
    return BatchPlan(empty, empty.copy(), np.zeros(0, dtype=bool))


def stateless_plan(windows, batch_size, remainder="pad", rng=None):
    """Group windows into batches, shuffled if ``rng`` is given.

    Parameters
    ----------
    windows : ndarray of shape (n_windows, 2)
        ``(series, start)`` of every window.
    batch_size : int
    remainder : {"pad", "drop", "error"}, default="pad"
        What to do with a last batch that is not full: pad it with masked slots,
        drop it, or raise :class:`BatchPlanError`.
    rng : numpy.random.Generator, optional
        Shuffles the windows when given.

    Returns
    -------
    BatchPlan
    """
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    if rng is not None:
        windows = windows[rng.permutation(len(windows))]
    n_full, leftover = divmod(len(windows), batch_size)
    dropped = {}
    if leftover:
        if remainder == "error":
            raise BatchPlanError(
                f"{len(windows)} windows do not fill whole batches of {batch_size} "
                f"({leftover} left over)"
            )
        if remainder == "drop":
            windows = windows[: n_full * batch_size]
            dropped["windows"] = leftover
        else:
            padding = np.full((batch_size - leftover, 2), [PADDING, 0])
            windows = np.concatenate([windows, padding])
    if not len(windows):
        return _empty_plan(batch_size)
    grouped = windows.reshape(-1, batch_size, 2)
    return BatchPlan(grouped[..., 0], grouped[..., 1], np.zeros(len(grouped), dtype=bool), dropped)


def series_windows(n_series, n_times, timesteps, stride=1):
    """Return ``(series, start)`` of every window of ``timesteps`` steps, ``stride`` steps apart."""
    starts = np.arange(0, n_times - timesteps + 1, stride)
    series = np.repeat(np.arange(n_series), len(starts))
    return np.stack([series, np.tile(starts, n_series)], axis=1)


def stateful_plan(n_series, n_times, timesteps, batch_size, remainder="error"):
    """Plan stateful batches in which each slot follows one series through time.

    Series are taken in groups of ``batch_size``; within a group, batch ``k+1``
    continues batch ``k`` in every slot with the next non-overlapping window,
    and states are reset before the first batch of every group. Steps after the
    last whole window of a series are not trained on.

    Parameters
    ----------
    n_series, n_times, timesteps, batch_size : int
    remainder : {"error", "drop", "pad"}, default="error"
        What to do when the series do not fill the last group: raise
        :class:`BatchPlanError`, drop the series left over, or fill the empty
        slots with masked padding.

    Returns
    -------
    BatchPlan
    """
    windows_per_series = n_times // timesteps
    if windows_per_series == 0:
        raise BatchPlanError(f"series of {n_times} steps are shorter than timesteps={timesteps}")
    n_groups, leftover = divmod(n_series, batch_size)
    series = np.arange(n_series)
    dropped = {}
    if n_times % timesteps:
        dropped["steps_per_series"] = n_times % timesteps
    if leftover:
        if remainder == "error":
            raise BatchPlanError(
                f"{n_series} series do not fill whole stateful batches of {batch_size} "
                f"({leftover} left over)"
            )
        if remainder == "drop":
            series = series[: n_groups * batch_size]
            dropped["series"] = leftover
        else:
            series = np.concatenate([series, np.full(batch_size - leftover, PADDING)])
    if not len(series):
        return _empty_plan(batch_size)

    groups = series.reshape(-1, batch_size)
    locations = np.repeat(groups, windows_per_series, axis=0)
    window_index = np.tile(np.arange(windows_per_series), len(groups))
    starts = np.repeat(window_index[:, None] * timesteps, batch_size, axis=1)
    resets = window_index == 0
    return BatchPlan(locations, starts, resets, dropped)


def sequential_plan(n_samples, batch_size, remainder="error"):
    """Plan batches of consecutive samples in file order, for stateful training on samples.

    Sample ``k * batch_size + s`` is taken to continue sample
    ``(k - 1) * batch_size + s``, as Keras expects of stateful inputs, so states
    are reset only at the start of an epoch.
    """
    plan = stateless_plan(np.stack([np.arange(n_samples), np.zeros(n_samples, dtype=np.int64)], axis=1), batch_size, remainder)
    if len(plan):
        plan.resets[0] = True
    return plan
