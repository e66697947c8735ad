"""Batch plans and read blocks: which window of which series fills each slot of each batch.

Everything here is index bookkeeping with no data in it, so it can be tested on
its own. A *window* is ``(series, start)``: series ``series`` from time index
``start`` for ``timesteps`` steps. In the samples layout every sample is a
series of ``timesteps`` steps with one window at start 0.

A :class:`BatchPlan` lists the windows of every batch of an epoch: batch ``b``
slot ``s`` reads series ``locations[b, s]`` from ``starts[b, s]``. A location of
``-1`` (:data:`PADDING`) marks a padding slot whose inputs are zeros and whose
targets are masked. ``resets[b]`` is true when stateful RNN states must be set
to zero before batch ``b``. Stateful training uses plans. Stateless training
shuffles windows block by block instead (see :func:`window_blocks`), so that
the windows of an epoch are never all listed at once.

A :class:`Block` is a rectangle of data read from the file in one piece: the
training pipeline reads, scales and keeps one block at a time and cuts the
windows of each batch out of it.
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
    """Index maps for one epoch; see the module docstring.

    Attributes
    ----------
    locations, starts : ndarray of shape (n_batches, batch_size), int64
    resets : ndarray of shape (n_batches,), bool
    dropped : dict
        What the remainder policy left out or padded, such as ``{"series": 2}``.
    """

    locations: np.ndarray
    starts: np.ndarray
    resets: np.ndarray
    dropped: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.locations)


@dataclass(frozen=True)
class Block:
    """A rectangle of data read at once, and the windows that start in it.

    Attributes
    ----------
    first_series, stop_series : int
        Series ``[first_series, stop_series)`` of the part being read.
    start, stop : int
        Time steps ``[start, stop)`` to read. Blocks of one row group overlap
        by up to ``timesteps - 1`` steps so that every window fits in one block.
    core_stop : int
        Steps ``[start, core_stop)`` belong to this block alone. The cores of
        all blocks partition the data, so statistics summed over cores count
        every step once.
    window_starts : ndarray of int64
        Start times of the windows of this block, the same for each series.
    """

    first_series: int
    stop_series: int
    start: int
    stop: int
    core_stop: int
    window_starts: np.ndarray

    @property
    def n_series(self):
        return self.stop_series - self.first_series

    @property
    def n_windows(self):
        return self.n_series * len(self.window_starts)

    def windows(self):
        """Return ``(series, start)`` of every window, relative to the block's first series and step."""
        # int32 halves the index memory of a block; block sizes stay far below 2**31.
        series = np.repeat(np.arange(self.n_series, dtype=np.int32), len(self.window_starts))
        starts = np.tile((self.window_starts - self.start).astype(np.int32), self.n_series)
        return np.stack([series, starts], axis=1)


@dataclass(frozen=True)
class Region:
    """Consecutive batches of a plan whose windows all lie in series ``[first_series, stop_series)``, steps ``[start, stop)``."""

    first_batch: int
    stop_batch: int
    first_series: int
    stop_series: int
    start: int
    stop: int


def _empty_plan(batch_size):
    empty = np.zeros((0, batch_size), dtype=np.int64)
    return BatchPlan(empty, empty.copy(), np.zeros(0, dtype=bool))


def window_starts(n_times, timesteps, stride=1):
    """Return the start of every whole window of ``timesteps`` steps, ``stride`` steps apart."""
    return np.arange(0, n_times - timesteps + 1, stride, dtype=np.int64)


def window_blocks(n_series, n_times, timesteps, stride, max_location_steps, min_series=1):
    """Split ``n_series`` series of ``n_times`` steps into blocks of about ``max_location_steps``.

    Whole series are preferred: a block holds as many whole series as fit.
    Only when fewer than ``min_series`` whole series fit is the time axis cut,
    with ``min_series`` series per block, so that reads stay aligned with the
    file's chunks.

    Parameters
    ----------
    n_series, n_times, timesteps, stride : int
    max_location_steps : int
        Target size of a block in location-steps (series times steps).
    min_series : int, default=1
        Minimum number of series per block, normally the file's chunk size along locations.

    Returns
    -------
    list of Block
        Ordered by series group, then by time.
    """
    starts = window_starts(n_times, timesteps, stride)
    min_series = max(1, min(min_series, n_series))
    whole_series = max_location_steps // max(n_times, 1)
    blocks = []
    if whole_series >= min_series:
        for first in range(0, n_series, whole_series):
            stop = min(first + whole_series, n_series)
            blocks.append(Block(first, stop, 0, n_times, n_times, starts))
        return blocks

    # Cut time: each block has min_series series and as many window starts as fit.
    steps_per_block = max(max_location_steps // min_series, timesteps)
    starts_per_block = max(1, (steps_per_block - timesteps) // stride + 1)
    pieces = [starts[k : k + starts_per_block] for k in range(0, len(starts), starts_per_block)] or [starts]
    for first in range(0, n_series, min_series):
        stop_series = min(first + min_series, n_series)
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            start = 0 if index == 0 else int(piece[0])
            core_stop = n_times if last else int(pieces[index + 1][0])
            stop = n_times if last else max(core_stop, int(piece[-1]) + timesteps)
            blocks.append(Block(first, stop_series, start, stop, core_stop, piece))
    return blocks


def stateful_plan(n_series, n_times, timesteps, batch_size, remainder="error"):
    """Plan stateful batches in which each slot follows one series through time.

    Series are taken in groups of ``batch_size``. Within a group, batch ``k+1``
    continues batch ``k`` in every slot with the next non-overlapping window,
    and states are reset before the first batch of every group, so also at the
    start of the epoch.

    Parameters
    ----------
    n_series, n_times, timesteps, batch_size : int
    remainder : {"error", "drop", "pad"}, default="error"
        What to do with series that do not fill the last group, and with the
        ``n_times % timesteps`` steps after the last whole window of each
        series: raise :class:`BatchPlanError`, leave them out, or pad them
        (slots of :data:`PADDING`, and a last window that runs past the series
        end, whose extra steps the reader fills with zeros and masked targets).

    Returns
    -------
    BatchPlan
        ``dropped`` records ``series`` and ``steps_per_series`` left out, or
        ``padding_slots`` and ``padding_steps`` added.
    """
    if n_times < timesteps and remainder != "pad":
        raise BatchPlanError(f"series of {n_times} steps are shorter than timesteps={timesteps}")
    n_groups, leftover_series = divmod(n_series, batch_size)
    leftover_steps = n_times % timesteps
    windows_per_series = n_times // timesteps
    series = np.arange(n_series)
    dropped = {}

    if leftover_series or leftover_steps:
        if remainder == "error":
            problems = []
            if leftover_series:
                problems.append(f"{n_series} series do not fill whole stateful batches of {batch_size} ({leftover_series} left over)")
            if leftover_steps:
                problems.append(f"{n_times} steps do not fill whole windows of timesteps={timesteps} ({leftover_steps} left over)")
            raise BatchPlanError("; ".join(problems))
        if remainder == "drop":
            if leftover_series:
                series = series[: n_groups * batch_size]
                dropped["series"] = leftover_series
            if leftover_steps:
                dropped["steps_per_series"] = leftover_steps
        else:
            if leftover_series:
                series = np.concatenate([series, np.full(batch_size - leftover_series, PADDING)])
                dropped["padding_slots"] = batch_size - leftover_series
            if leftover_steps:
                windows_per_series += 1
                dropped["padding_steps"] = timesteps - leftover_steps
    if not len(series) or windows_per_series == 0:
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

    Parameters
    ----------
    n_samples, batch_size : int
    remainder : {"error", "drop", "pad"}, default="error"
        Samples that do not fill the last batch: raise :class:`BatchPlanError`,
        leave them out, or fill the batch with :data:`PADDING` slots.

    Returns
    -------
    BatchPlan
    """
    n_full, leftover = divmod(n_samples, batch_size)
    samples = np.arange(n_samples)
    dropped = {}
    if leftover:
        if remainder == "error":
            raise BatchPlanError(f"{n_samples} samples do not fill whole batches of {batch_size} ({leftover} left over)")
        if remainder == "drop":
            samples = samples[: n_full * batch_size]
            dropped["windows"] = leftover
        else:
            samples = np.concatenate([samples, np.full(batch_size - leftover, PADDING)])
            dropped["padding_slots"] = batch_size - leftover
    if not len(samples):
        return _empty_plan(batch_size)
    locations = samples.reshape(-1, batch_size)
    resets = np.zeros(len(locations), dtype=bool)
    resets[0] = True
    return BatchPlan(locations, np.zeros_like(locations), resets, dropped)


def batch_count(n_windows, batch_size, remainder):
    """Return the number of batches of an epoch of ``n_windows`` shuffled windows, and what was left out.

    Parameters
    ----------
    n_windows, batch_size : int
    remainder : {"pad", "drop", "error"}
        What to do with a last batch that is not full.

    Returns
    -------
    n_batches : int
    dropped : dict
        ``{"windows": n}`` for ``drop``, ``{"padding_slots": n}`` for ``pad``.

    Raises
    ------
    BatchPlanError
        If the windows do not fill whole batches and ``remainder`` is ``error``.
    """
    n_full, leftover = divmod(n_windows, batch_size)
    if not leftover:
        return n_full, {}
    if remainder == "error":
        raise BatchPlanError(f"{n_windows} windows do not fill whole batches of {batch_size} ({leftover} left over)")
    if remainder == "drop":
        return n_full, {"windows": leftover}
    return n_full + 1, {"padding_slots": batch_size - leftover}


def plan_regions(plan, timesteps, max_location_steps):
    """Split a plan into runs of consecutive batches that each read one rectangle of data.

    A run grows while the rectangle it covers (its series range times its
    step range) stays within ``max_location_steps``. A single batch that is
    larger forms a run of its own. Padding slots read nothing.

    Parameters
    ----------
    plan : BatchPlan
    timesteps : int
    max_location_steps : int

    Returns
    -------
    list of Region
    """
    if not len(plan):
        return []
    valid = plan.locations != PADDING
    has_valid = valid.any(axis=1)
    big = np.iinfo(np.int64).max
    series_low = np.where(valid, plan.locations, big).min(axis=1)
    series_high = np.where(valid, plan.locations, -1).max(axis=1) + 1
    step_low = np.where(valid, plan.starts, big).min(axis=1)
    step_high = np.where(valid, plan.starts, -1).max(axis=1) + timesteps

    regions = []
    first = 0
    bounds = None
    for index in range(len(plan)):
        if not has_valid[index]:
            continue
        batch = (series_low[index], series_high[index], step_low[index], step_high[index])
        if bounds is None:
            bounds = batch
            continue
        merged = (min(bounds[0], batch[0]), max(bounds[1], batch[1]), min(bounds[2], batch[2]), max(bounds[3], batch[3]))
        if (merged[1] - merged[0]) * (merged[3] - merged[2]) > max_location_steps:
            regions.append(Region(first, index, *(int(v) for v in bounds)))
            first, bounds = index, batch
        else:
            bounds = merged
    if bounds is None:
        bounds = (0, 0, 0, 0)  # Only padding slots: nothing to read.
    regions.append(Region(first, len(plan), *(int(v) for v in bounds)))
    return regions
