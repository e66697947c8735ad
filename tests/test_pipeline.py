"""The input pipeline: batches cut per block from a lazy reader, and training through it."""

import h5py
import numpy as np
import pytest

from conftest import train_job_dict, write_series_file
from rnnjobs.batching import PADDING, stateful_plan, window_blocks
from rnnjobs.data import SeriesReader, read_series
from rnnjobs.modelfile import read_model_metadata
from rnnjobs.pipeline import BatchStream, DataPart, scan_part
from rnnjobs.scaling import Scaler
from rnnjobs.spec import normalize_job
from rnnjobs.training import TrainingError, train_job

FEATURES, TARGETS = ["a", "b", "c"], ["y"]


def series_spec(path):
    return {"file": str(path), "layout": "series", "features": FEATURES, "targets": TARGETS, "valid_range": {}, "missing_features": "error"}


class RecordingReader:
    """A reader that records the size of every block read through it."""

    def __init__(self, reader):
        self.reader = reader
        self.n_times = reader.n_times
        self.chunk_series = reader.chunk_series
        self.sizes = []

    def read(self, rows, start, stop, count_stop=None):
        features, targets = self.reader.read(rows, start, stop, count_stop)
        self.sizes.append(features.shape[0] * features.shape[1])
        return features, targets


def identity_scalers():
    return Scaler("none").fit(np.zeros((1, 3))), Scaler("none").fit(np.zeros((1, 1)))


def stateless_stream(reader, budget, seed=0, remainder="pad", timesteps=10, stride=1, batch_size=8, rows=None):
    part = DataPart(reader, np.arange(reader.reader.n_series if rows is None else rows), "training")
    blocks = window_blocks(part.n_series, part.n_times, timesteps, stride, budget, reader.chunk_series)
    counts = scan_part(part, blocks, timesteps, "sequence")
    return BatchStream(part, identity_scalers(), batch_size, timesteps, "sequence", blocks=blocks, window_counts=counts, remainder=remainder, seed=seed)


def epoch_arrays(stream, epoch):
    chunks = list(stream.batches(epoch))
    x = np.concatenate([chunk[0] for chunk in chunks])
    y = np.concatenate([chunk[1] for chunk in chunks])
    resets = np.concatenate([chunk[2] for chunk in chunks])
    return x, y, resets


def sorted_windows(x):
    flat = x.reshape(len(x) * x.shape[1], -1)
    return flat[np.lexsort(flat.T[::-1])]


def test_stateless_blocks_give_same_windows(series_file):
    with SeriesReader(series_spec(series_file), FEATURES, TARGETS) as reader:
        one_block = stateless_stream(RecordingReader(reader), budget=10_000)
        small_blocks = stateless_stream(RecordingReader(reader), budget=100)
        x_one, _, _ = epoch_arrays(one_block, 0)
        x_small, y_small, resets = epoch_arrays(small_blocks, 0)

    assert len(small_blocks.blocks) > 4
    assert x_small.shape == (one_block.n_batches, 8, 10, 3)
    assert small_blocks.n_windows == 8 * 51
    assert np.array_equal(sorted_windows(x_one), sorted_windows(x_small))
    assert np.isfinite(y_small).all()
    assert not resets.any()


def test_stateless_shuffle_per_epoch_and_seed(series_file):
    with SeriesReader(series_spec(series_file), FEATURES, TARGETS) as reader:
        stream = stateless_stream(RecordingReader(reader), budget=100, seed=3)
        again = stateless_stream(RecordingReader(reader), budget=100, seed=3)
        first, _, _ = epoch_arrays(stream, 0)
        second, _, _ = epoch_arrays(stream, 1)
        repeated, _, _ = epoch_arrays(again, 0)

    assert not np.array_equal(first, second)
    assert np.array_equal(first, repeated)
    assert np.array_equal(sorted_windows(first), sorted_windows(second))


def test_stateless_windows_match_whole_arrays(series_file):
    whole = read_series(series_spec(series_file), FEATURES, TARGETS)
    expected = np.stack([whole.features[s, t : t + 10] for s in range(8) for t in range(51)])

    with SeriesReader(series_spec(series_file), FEATURES, TARGETS) as reader:
        x, _, _ = epoch_arrays(stateless_stream(RecordingReader(reader), budget=130, seed=None), 0)

    assert np.array_equal(sorted_windows(x.reshape(-1, 1, 10, 3)), sorted_windows(expected[:, None]))


def test_stateless_last_batch_padded(series_file):
    with SeriesReader(series_spec(series_file), FEATURES, TARGETS) as reader:
        stream = stateless_stream(RecordingReader(reader), budget=130, remainder="pad", batch_size=16, rows=7)
        x, y, _ = epoch_arrays(stream, 0)

    assert stream.dropped == {"padding_slots": 16 * 23 - 357}
    assert len(x) == 23
    padded = np.isnan(y[-1]).all(axis=(1, 2))
    assert padded.sum() == 16 * 23 - 357
    assert not x[-1][padded].any()


def test_stateless_drop_last_batch(series_file):
    with SeriesReader(series_spec(series_file), FEATURES, TARGETS) as reader:
        stream = stateless_stream(RecordingReader(reader), budget=130, remainder="drop", batch_size=16, rows=7)
        x, y, _ = epoch_arrays(stream, 0)

    assert stream.dropped == {"windows": 357 - 16 * 22}
    assert len(x) == 22
    assert not np.isnan(y).any()


def test_stateful_stream_equals_plan_on_whole_arrays(series_file):
    whole = read_series(series_spec(series_file), FEATURES, TARGETS)
    plan = stateful_plan(8, 60, 10, 4)

    with SeriesReader(series_spec(series_file), FEATURES, TARGETS) as reader:
        recording = RecordingReader(reader)
        part = DataPart(recording, np.arange(8), "training")
        stream = BatchStream(part, identity_scalers(), 4, 10, "sequence", plan=plan, max_location_steps=4 * 20)
        x, y, resets = epoch_arrays(stream, 0)

    assert len(stream.regions) == 6
    assert max(recording.sizes) <= 4 * 20
    assert np.array_equal(resets, plan.resets)
    for batch in range(len(plan)):
        for slot in range(4):
            series, start = plan.locations[batch, slot], plan.starts[batch, slot]
            assert np.array_equal(x[batch, slot], whole.features[series, start : start + 10])
            assert np.array_equal(y[batch, slot], whole.targets[series, start : start + 10])


def test_stateful_stream_pads_slots_and_steps(series_file):
    plan = stateful_plan(7, 60, 25, 4, remainder="pad")

    with SeriesReader(series_spec(series_file), FEATURES, TARGETS) as reader:
        part = DataPart(RecordingReader(reader), np.arange(7), "training")
        x, y, _ = epoch_arrays(BatchStream(part, identity_scalers(), 4, 25, "sequence", plan=plan), 0)

    assert x.shape == (6, 4, 25, 3)
    assert np.isnan(y[3:, 3]).all()
    assert not x[3:, 3].any()
    assert np.isnan(y[2, :, 10:]).all()
    assert not x[2, :, 10:].any()
    assert np.isfinite(y[2, :3, :10]).all()
    assert plan.locations[-1, -1] == PADDING


def test_long_series_windows_cut_per_block(tmp_path):
    """Windows of 50 steps with stride 1 over 2,000 steps: reads stay within the block size."""
    path = write_series_file(tmp_path / "long.h5", n_locations=20, n_times=2_000)
    budget = 3_000

    with SeriesReader(series_spec(path), FEATURES, TARGETS) as reader:
        recording = RecordingReader(reader)
        stream = stateless_stream(recording, budget=budget, timesteps=50, batch_size=32, seed=5)
        n_chunks = 0
        for x, y, _ in stream.batches(0):
            n_chunks += 1
            assert x.shape[1:] == (32, 50, 3)
            assert len(x) <= 16

    assert stream.n_windows == 20 * 1_951
    assert n_chunks >= stream.n_batches // 16
    assert max(recording.sizes) <= budget + 50


def small_job(data_file, tmp_path, name, **overrides):
    job = train_job_dict(data_file, tmp_path / f"{name}.weights.h5", **overrides)
    return normalize_job(job)


def test_stateful_training_independent_of_block_size(series_file, tmp_path):
    shapes = {"batch_size": 4, "timesteps": 10, "stateful": True}
    model = {"hidden_layers": [{"type": "LSTM", "units": 4}]}
    big = train_job(small_job(series_file, tmp_path, "big", shapes=shapes, model=model))
    small = train_job(small_job(series_file, tmp_path, "small", shapes=shapes, model=model), max_location_steps=40)

    assert big["weights_sha256"] == small["weights_sha256"]


def test_stateless_training_with_small_blocks(series_file, tmp_path):
    job = small_job(series_file, tmp_path, "blocks", training={"epochs": 2, "seed": 1, "validation_split": 0.25})

    result = train_job(job, max_location_steps=70)

    metadata = read_model_metadata(result["output"])
    assert np.isfinite(metadata["history"]["loss"]).all()
    assert np.isfinite(metadata["history"]["val_loss"]).all()
    assert metadata["data"]["batches"]["training"]["windows"] == 6 * 51
    assert result["windows"] == 2 * 6 * 51


def test_scalers_fitted_block_by_block(series_file, tmp_path):
    job = small_job(series_file, tmp_path, "scaled", training={"epochs": 1, "seed": 1})
    whole = read_series(series_spec(series_file), FEATURES, TARGETS)

    result = train_job(job, max_location_steps=70)

    scalers = read_model_metadata(result["output"])["scalers"]
    expected = Scaler("standard").fit(whole.features)
    assert np.allclose(scalers["features"]["offset"], expected.offset_, rtol=1e-6, atol=1e-6)
    assert np.allclose(scalers["features"]["scale"], expected.scale_, rtol=1e-6)


def test_jit_compile_matches_plain_step(series_file, tmp_path):
    training = {"epochs": 2, "seed": 1, "learning_rate": 0.01}
    plain = train_job(small_job(series_file, tmp_path, "plain", training={**training, "jit_compile": False}))
    compiled = train_job(small_job(series_file, tmp_path, "xla", training={**training, "jit_compile": True}))

    plain_loss = read_model_metadata(plain["output"])["history"]["loss"]
    compiled_loss = read_model_metadata(compiled["output"])["history"]["loss"]

    assert np.allclose(plain_loss, compiled_loss, rtol=1e-4)


def test_steps_per_execution_keeps_weights(series_file, tmp_path, monkeypatch):
    job = {"training": {"epochs": 1, "seed": 1, "learning_rate": 0.01, "jit_compile": False}}
    monkeypatch.setattr("rnnjobs.training.STEPS_PER_EXECUTION", 1)
    single = train_job(small_job(series_file, tmp_path, "single", **job))
    monkeypatch.setattr("rnnjobs.training.STEPS_PER_EXECUTION", 16)
    several = train_job(small_job(series_file, tmp_path, "several", **job))

    assert single["weights_sha256"] == several["weights_sha256"]


def test_long_series_training_bounded_blocks(tmp_path):
    """A scaled-down long-series job: stride 1, timesteps 50, blocks far smaller than the data."""
    path = write_series_file(tmp_path / "long.h5", n_locations=6, n_times=1_000)
    job = small_job(
        path, tmp_path, "long",
        model={"hidden_layers": [{"type": "LSTM", "units": 3}]},
        shapes={"batch_size": 64, "timesteps": 50, "stateful": False, "stride": 1},
        training={"epochs": 1, "seed": 1},
    )

    result = train_job(job, max_location_steps=1_200)

    assert result["windows"] == 6 * 951
    assert np.isfinite(result["loss"])


def test_nonfinite_loss_fails_without_model_file(tmp_path):
    path = write_series_file(tmp_path / "huge.h5")
    with h5py.File(path, "r+") as h5file:
        h5file["y"][...] = 1e30
    job = small_job(path, tmp_path, "huge", training={"epochs": 2, "seed": 1})
    job["scaling"] = {"features": "none", "targets": "none"}

    with pytest.raises(TrainingError, match=r"training loss became (nan|inf) by batch \d+; no model file was written"):
        train_job(job)

    assert not (tmp_path / "huge.weights.h5").exists()
