"""Input pipeline: training batches cut block by block from lazily read data and fed to tf.data.

The data of a part (the training or the validation locations) is read one
block at a time through a reader (:class:`rnnjobs.data.SeriesReader` or
:class:`rnnjobs.data.ArrayReader`), scaled once per block, and the windows of
each batch are cut out of the block in memory by index arithmetic. Peak memory
is therefore set by the block size, never by the number of windows: all
windows of 200 locations x 50,000 steps with 50 timesteps and stride 1 would
take about 6 GB.

Stateless training shuffles the order of the blocks, and the windows within
each block, every epoch. When the part fits in one block, this is a full
shuffle. Stateful training follows a :class:`rnnjobs.batching.BatchPlan`, and
each batch carries a flag that resets the RNN states inside the training step.
"""

import logging
from dataclasses import dataclass

import numpy as np

from rnnjobs.batching import PADDING, batch_count, plan_regions

logger = logging.getLogger(__name__)

# Target size of one read block, in location-steps. A block of 3 features and
# 1 target is 64 MB of float32, held twice while it is scaled.
BLOCK_LOCATION_STEPS = 1 << 22

# Batches cut and handed to tf.data per call of the Python generator. Handing
# over several at once keeps the cost of each call small next to the training steps.
BATCHES_PER_YIELD = 16


@dataclass
class DataPart:
    """Series of one role (training or validation) and the reader they come from.

    Attributes
    ----------
    reader : SeriesReader or ArrayReader
    rows : ndarray of int
        Positions of the part's series among the reader's, ascending.
    label : str
        ``"training"`` or ``"validation"``, for messages.
    """

    reader: object
    rows: np.ndarray
    label: str

    @property
    def n_series(self):
        return len(self.rows)

    @property
    def n_times(self):
        return self.reader.n_times

    def read(self, first_series, stop_series, start, stop, count_stop=None):
        """Read series ``[first_series, stop_series)`` of the part over steps ``[start, stop)``."""
        return self.reader.read(self.rows[first_series:stop_series], start, stop, count_stop)


def target_mode(targets_ndim, return_sequences):
    """Return how a window's targets are taken: ``"sequence"``, ``"last"`` step, or ``"sample"`` (2-D targets)."""
    if targets_ndim == 2:
        return "sample"
    return "sequence" if return_sequences else "last"


def has_valid_target(targets, windows, timesteps, mode):
    """Return a mask of the windows (rows of ``(series, start)`` within ``targets``) with a valid target."""
    if mode == "sample":
        return np.isfinite(targets[windows[:, 0]]).any(axis=-1)
    valid = np.isfinite(targets).any(axis=-1)
    if mode == "last":
        return valid[windows[:, 0], windows[:, 1] + timesteps - 1]
    counts = np.concatenate([np.zeros((len(valid), 1), np.int64), np.cumsum(valid, axis=1)], axis=1)
    return counts[windows[:, 0], windows[:, 1] + timesteps] > counts[windows[:, 0], windows[:, 1]]


def gather_windows(features, targets, rows, starts, timesteps, mode):
    """Cut windows ``(rows[i], starts[i])`` out of a block; rows of :data:`PADDING` get zeros and NaN targets."""
    padding = rows == PADDING
    rows = np.where(padding, 0, rows)
    starts = np.where(padding, 0, starts)
    steps = starts[:, None] + np.arange(timesteps)[None, :]
    x = features[rows[:, None], steps]
    if mode == "sample":
        y = targets[rows]
    elif mode == "sequence":
        y = targets[rows[:, None], steps]
    else:
        y = targets[rows, steps[:, -1]]
    if padding.any():
        x[padding] = 0.0
        y[padding] = np.nan
    return x, y


def scan_part(part, blocks, timesteps, mode, scalers=None):
    """Read a part once: check every value, fit the scalers, and count each block's usable windows.

    Parameters
    ----------
    part : DataPart
    blocks : list of Block
    timesteps : int
    mode : str
        See :func:`target_mode`.
    scalers : tuple of Scaler, optional
        Feature and target scalers to fit on the part, block by block.

    Returns
    -------
    ndarray of int
        Windows with at least one valid target, per block.

    Raises
    ------
    DataError
        From the reader, at the first invalid feature value.
    """
    counts = np.zeros(len(blocks), dtype=np.int64)
    for index, block in enumerate(blocks):
        features, targets = part.read(block.first_series, block.stop_series, block.start, block.stop, block.core_stop)
        if scalers is not None:
            core = block.core_stop - block.start
            scalers[0].partial_fit(features[:, :core])
            scalers[1].partial_fit(targets if mode == "sample" else targets[:, :core])
        windows = block.windows()
        if len(windows):
            counts[index] = int(has_valid_target(targets, windows, timesteps, mode).sum())
    return counts


class BatchStream:
    """The batches of one part, epoch after epoch, as a tf.data dataset.

    Parameters
    ----------
    part : DataPart
    scalers : tuple of Scaler
        Fitted feature and target scalers.
    batch_size, timesteps : int
    mode : str
        See :func:`target_mode`.
    blocks : list of Block, optional
        For stateless batches: the blocks, with ``window_counts``.
    window_counts : ndarray of int, optional
        Usable windows per block, from :func:`scan_part`.
    remainder : str, optional
        Policy for a last stateless batch that is not full.
    plan : BatchPlan, optional
        For stateful batches, instead of blocks.
    seed : int, optional
        Shuffle the blocks and windows of stateless batches, differently each epoch.
    max_location_steps : int, default=BLOCK_LOCATION_STEPS
        Size of the data read at once for a plan.

    Attributes
    ----------
    n_batches : int
        Batches per epoch.
    n_windows : int
        Windows per epoch, padding slots not counted.
    dropped : dict
        What the remainder policy left out or padded.
    """

    def __init__(self, part, scalers, batch_size, timesteps, mode, *, blocks=None, window_counts=None,
                 remainder="pad", plan=None, seed=None, max_location_steps=BLOCK_LOCATION_STEPS):
        self.part = part
        self.scalers = scalers
        self.batch_size = batch_size
        self.timesteps = timesteps
        self.mode = mode
        self.seed = seed
        self._epoch = 0
        if plan is not None:
            self.plan = plan
            self.regions = plan_regions(plan, timesteps, max_location_steps)
            self.n_batches = len(plan)
            self.n_windows = int((plan.locations != PADDING).sum())
            self.dropped = dict(plan.dropped)
        else:
            self.plan = None
            self.blocks = blocks
            self.window_counts = window_counts
            self.remainder = remainder
            total = int(window_counts.sum())
            self.n_batches, self.dropped = batch_count(total, batch_size, remainder)
            self.n_windows = min(total, self.n_batches * batch_size)

    def _load(self, first_series, stop_series, start, stop):
        """Read and scale a rectangle; steps past the series end get zero features and NaN targets."""
        readable_stop = min(stop, self.part.n_times)
        features, targets = self.part.read(first_series, stop_series, start, readable_stop)
        features = self.scalers[0].transform(features)
        targets = self.scalers[1].transform(targets)
        missing = stop - readable_stop
        if missing > 0:
            features = np.pad(features, ((0, 0), (0, missing), (0, 0)))
            if self.mode != "sample":
                targets = np.pad(targets, ((0, 0), (0, missing), (0, 0)), constant_values=np.nan)
        return features, targets

    def batches(self, epoch):
        """Yield ``(x, y, resets)`` of up to :data:`BATCHES_PER_YIELD` batches at a time, for epoch ``epoch``."""
        if self.plan is not None:
            yield from self._planned_batches()
        else:
            yield from self._shuffled_batches(epoch)

    def _chunk(self, x, y, resets):
        shape = (-1, self.batch_size)
        return x.reshape(shape + x.shape[1:]), y.reshape(shape + y.shape[1:]), resets

    def _planned_batches(self):
        plan, step = self.plan, BATCHES_PER_YIELD
        for region in self.regions:
            features, targets = self._load(region.first_series, region.stop_series, region.start, region.stop)
            for first in range(region.first_batch, region.stop_batch, step):
                last = min(first + step, region.stop_batch)
                locations = plan.locations[first:last].ravel()
                rows = np.where(locations == PADDING, PADDING, locations - region.first_series)
                starts = plan.starts[first:last].ravel() - region.start
                x, y = gather_windows(features, targets, rows, starts, self.timesteps, self.mode)
                yield self._chunk(x, y, plan.resets[first:last])

    def _shuffled_batches(self, epoch):
        rng = np.random.default_rng([self.seed, epoch]) if self.seed is not None else None
        order = rng.permutation(len(self.blocks)) if rng is not None else np.arange(len(self.blocks))
        per_yield = BATCHES_PER_YIELD * self.batch_size
        pending_x, pending_y, n_pending = [], [], 0
        emitted = 0

        for index in order:
            if not self.window_counts[index]:
                continue
            block = self.blocks[index]
            features, targets = self._load(block.first_series, block.stop_series, block.start, block.stop)
            windows = block.windows()
            windows = windows[has_valid_target(targets, windows, self.timesteps, self.mode)]
            if rng is not None:
                windows = windows[rng.permutation(len(windows))]
            for first in range(0, len(windows), per_yield):
                piece = windows[first : first + per_yield]
                x, y = gather_windows(features, targets, piece[:, 0], piece[:, 1], self.timesteps, self.mode)
                pending_x.append(x)
                pending_y.append(y)
                n_pending += len(piece)
                if n_pending >= per_yield:
                    x, y = np.concatenate(pending_x), np.concatenate(pending_y)
                    n_whole = len(x) // per_yield * per_yield
                    for cut in range(0, n_whole, per_yield):
                        emitted += BATCHES_PER_YIELD
                        yield self._chunk(x[cut : cut + per_yield], y[cut : cut + per_yield], np.zeros(BATCHES_PER_YIELD, bool))
                    pending_x, pending_y, n_pending = [x[n_whole:]], [y[n_whole:]], len(x) - n_whole

        yield from self._last_batches(pending_x, pending_y, n_pending, self.n_batches - emitted)

    def _last_batches(self, pending_x, pending_y, n_pending, n_batches):
        """Yield the windows left at the end of an epoch as ``n_batches`` batches, padded or cut to fit."""
        if n_batches <= 0 or not n_pending:
            return
        x, y = np.concatenate(pending_x), np.concatenate(pending_y)
        wanted = n_batches * self.batch_size
        if len(x) > wanted:
            x, y = x[:wanted], y[:wanted]
        elif len(x) < wanted:
            missing = wanted - len(x)
            x = np.concatenate([x, np.zeros((missing,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.full((missing,) + y.shape[1:], np.nan, y.dtype)])
        yield self._chunk(x, y, np.zeros(n_batches, bool))

    def dataset(self, n_features, target_shape, first_epoch=0):
        """Return a tf.data dataset of ``(x, y, reset)`` batches; each iteration over it is a new epoch.

        Parameters
        ----------
        n_features : int
        target_shape : tuple of int
            Shape of one window's targets: ``(timesteps, n_targets)`` or ``(n_targets,)``.
        first_epoch : int, default=0
            Epoch of the first iteration, such as the epoch a resumed training starts at;
            the shuffle order of an epoch depends on its number.
        """
        import tensorflow as tf

        self._epoch = first_epoch

        def next_epoch():
            epoch = self._epoch
            self._epoch += 1
            yield from self.batches(epoch)

        signature = (
            tf.TensorSpec((None, self.batch_size, self.timesteps, n_features), tf.float32),
            tf.TensorSpec((None, self.batch_size) + tuple(target_shape), tf.float32),
            tf.TensorSpec((None,), tf.bool),
        )
        dataset = tf.data.Dataset.from_generator(next_epoch, output_signature=signature).unbatch()
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(self.n_batches))
        return dataset.prefetch(2 * BATCHES_PER_YIELD)

