"""Batch plans and read blocks as index maps, and the remainder policies of stateful train jobs."""

import logging

import h5py
import numpy as np
import pytest

from conftest import train_job_dict, write_series_file
from rnnjobs.batching import (
    PADDING,
    BatchPlanError,
    batch_count,
    plan_regions,
    sequential_plan,
    stateful_plan,
    window_blocks,
    window_starts,
)
from rnnjobs.data import DataError
from rnnjobs.modelfile import read_model_metadata
from rnnjobs.spec import normalize_job
from rnnjobs.training import train_job


def assert_slots_continue(plan, timesteps):
    """Check that every batch without a reset continues the previous batch slot by slot."""
    for index in range(1, len(plan)):
        if plan.resets[index]:
            continue
        assert np.array_equal(plan.locations[index], plan.locations[index - 1]), f"batch {index} changes location"
        assert np.array_equal(plan.starts[index], plan.starts[index - 1] + timesteps), f"batch {index} skips steps"


def test_stateful_plan_index_maps():
    plan = stateful_plan(n_series=8, n_times=30, timesteps=10, batch_size=4)

    assert plan.locations.tolist() == [[0, 1, 2, 3]] * 3 + [[4, 5, 6, 7]] * 3
    assert plan.starts.tolist() == [[0] * 4, [10] * 4, [20] * 4] * 2
    assert plan.resets.tolist() == [True, False, False, True, False, False]
    assert plan.dropped == {}


def test_stateful_plan_more_locations_than_slots():
    plan = stateful_plan(n_series=12, n_times=50, timesteps=10, batch_size=4)

    assert len(plan) == 3 * 5
    assert plan.resets.tolist() == [True, False, False, False, False] * 3
    assert sorted(set(plan.locations.ravel().tolist())) == list(range(12))
    assert_slots_continue(plan, 10)
    for group in range(3):
        batches = plan.locations[group * 5 : (group + 1) * 5]
        assert np.array_equal(batches, np.tile(np.arange(group * 4, group * 4 + 4), (5, 1)))


def test_stateful_plan_every_window_once():
    plan = stateful_plan(n_series=6, n_times=40, timesteps=8, batch_size=3)

    windows = sorted(zip(plan.locations.ravel().tolist(), plan.starts.ravel().tolist()))

    assert windows == sorted((s, t) for s in range(6) for t in range(0, 40, 8))


def test_stateful_plan_leftover_locations_error():
    with pytest.raises(BatchPlanError, match=r"10 series do not fill whole stateful batches of 4 \(2 left over\)"):
        stateful_plan(n_series=10, n_times=30, timesteps=10, batch_size=4)


def test_stateful_plan_leftover_locations_drop():
    plan = stateful_plan(n_series=10, n_times=30, timesteps=10, batch_size=4, remainder="drop")

    assert plan.dropped == {"series": 2}
    assert len(plan) == 6
    assert PADDING not in plan.locations
    assert set(plan.locations.ravel().tolist()) == set(range(8))


def test_stateful_plan_leftover_locations_pad():
    plan = stateful_plan(n_series=10, n_times=30, timesteps=10, batch_size=4, remainder="pad")

    assert plan.dropped == {"padding_slots": 2}
    assert len(plan) == 9
    assert plan.locations[-1].tolist() == [8, 9, PADDING, PADDING]
    assert plan.resets.tolist() == [True, False, False] * 3
    assert_slots_continue(plan, 10)


def test_stateful_plan_leftover_steps_error():
    with pytest.raises(BatchPlanError, match=r"35 steps do not fill whole windows of timesteps=10 \(5 left over\)"):
        stateful_plan(n_series=4, n_times=35, timesteps=10, batch_size=4)


def test_stateful_plan_leftover_steps_drop():
    plan = stateful_plan(n_series=4, n_times=35, timesteps=10, batch_size=4, remainder="drop")

    assert plan.dropped == {"steps_per_series": 5}
    assert plan.starts[:, 0].tolist() == [0, 10, 20]


def test_stateful_plan_leftover_steps_pad():
    plan = stateful_plan(n_series=4, n_times=35, timesteps=10, batch_size=4, remainder="pad")

    assert plan.dropped == {"padding_steps": 5}
    assert plan.starts[:, 0].tolist() == [0, 10, 20, 30]
    assert_slots_continue(plan, 10)


def test_stateful_plan_both_leftovers_named():
    with pytest.raises(BatchPlanError) as caught:
        stateful_plan(n_series=5, n_times=25, timesteps=10, batch_size=4)

    assert "5 series" in str(caught.value)
    assert "25 steps" in str(caught.value)


def test_stateful_plan_series_too_short():
    with pytest.raises(BatchPlanError, match="shorter than timesteps=10"):
        stateful_plan(n_series=4, n_times=6, timesteps=10, batch_size=4, remainder="drop")


def test_sequential_plan_resets_once():
    plan = sequential_plan(n_samples=12, batch_size=4)

    assert plan.locations.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert plan.resets.tolist() == [True, False, False]
    assert not plan.starts.any()


@pytest.mark.parametrize(
    "remainder, n_batches, dropped",
    [("drop", 2, {"windows": 2}), ("pad", 3, {"padding_slots": 2})],
)
def test_sequential_plan_remainder(remainder, n_batches, dropped):
    plan = sequential_plan(n_samples=10, batch_size=4, remainder=remainder)

    assert len(plan) == n_batches
    assert plan.dropped == dropped


def test_sequential_plan_remainder_error():
    with pytest.raises(BatchPlanError, match=r"10 samples do not fill whole batches of 4 \(2 left over\)"):
        sequential_plan(n_samples=10, batch_size=4)


@pytest.mark.parametrize(
    "n_windows, remainder, expected",
    [
        (64, "error", (2, {})),
        (70, "pad", (3, {"padding_slots": 26})),
        (70, "drop", (2, {"windows": 6})),
    ],
)
def test_batch_count(n_windows, remainder, expected):
    assert batch_count(n_windows, 32, remainder) == expected


def test_batch_count_error():
    with pytest.raises(BatchPlanError, match=r"70 windows do not fill whole batches of 32 \(6 left over\)"):
        batch_count(70, 32, "error")


def all_block_windows(blocks):
    windows = []
    for block in blocks:
        local = block.windows()
        windows.extend(zip((local[:, 0] + block.first_series).tolist(), (local[:, 1] + block.start).tolist()))
    return windows


@pytest.mark.parametrize(
    "n_series, n_times, timesteps, stride, budget, min_series",
    [
        (7, 100, 10, 1, 10_000, 1),  # one block
        (7, 100, 10, 3, 250, 1),  # whole series, two per block
        (5, 1000, 50, 1, 300, 2),  # time cut, two series per block
        (3, 1000, 50, 7, 120, 1),  # time cut, stride not dividing the piece
        (4, 60, 60, 1, 30, 1),  # one window per series, longer than the budget
    ],
)
def test_window_blocks_cover_every_window_once(n_series, n_times, timesteps, stride, budget, min_series):
    blocks = window_blocks(n_series, n_times, timesteps, stride, budget, min_series)

    windows = all_block_windows(blocks)
    expected = [(s, int(t)) for s in range(n_series) for t in window_starts(n_times, timesteps, stride)]

    assert sorted(windows) == sorted(expected)
    assert len(windows) == len(set(windows))
    for block in blocks:
        assert 0 <= block.start < block.core_stop <= block.stop <= n_times
        assert block.window_starts.min(initial=block.start) >= block.start
        assert block.window_starts.max(initial=block.start) + timesteps <= block.stop or not len(block.window_starts)


@pytest.mark.parametrize("n_times, budget, min_series", [(100, 10_000, 1), (1000, 300, 2), (999, 170, 1)])
def test_window_block_cores_partition_steps(n_times, budget, min_series):
    blocks = window_blocks(4, n_times, 20, 1, budget, min_series)

    covered = np.zeros((4, n_times), dtype=int)
    for block in blocks:
        covered[block.first_series : block.stop_series, block.start : block.core_stop] += 1

    assert (covered == 1).all()


def test_window_blocks_bounded_by_budget():
    budget = 2_000
    blocks = window_blocks(n_series=40, n_times=50_000, timesteps=50, stride=1, max_location_steps=budget, min_series=4)

    sizes = [block.n_series * (block.stop - block.start) for block in blocks]

    assert max(sizes) <= budget + 4 * 50
    assert len(blocks) > 100


def test_window_blocks_prefer_whole_series():
    blocks = window_blocks(n_series=10, n_times=100, timesteps=10, stride=1, max_location_steps=350)

    assert [(b.first_series, b.stop_series) for b in blocks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert all(b.start == 0 and b.stop == 100 for b in blocks)


def test_plan_regions_cover_plan_within_budget():
    plan = stateful_plan(n_series=12, n_times=200, timesteps=10, batch_size=4)

    regions = plan_regions(plan, timesteps=10, max_location_steps=4 * 50)

    assert regions[0].first_batch == 0
    assert regions[-1].stop_batch == len(plan)
    for before, after in zip(regions, regions[1:]):
        assert before.stop_batch == after.first_batch
    for region in regions:
        locations = plan.locations[region.first_batch : region.stop_batch]
        starts = plan.starts[region.first_batch : region.stop_batch]
        assert locations.min() >= region.first_series
        assert locations.max() < region.stop_series
        assert starts.min() >= region.start
        assert starts.max() + 10 <= region.stop
        assert (region.stop_series - region.first_series) * (region.stop - region.start) <= 4 * 50


def test_plan_regions_whole_plan_when_it_fits():
    plan = stateful_plan(n_series=8, n_times=40, timesteps=10, batch_size=4)

    regions = plan_regions(plan, timesteps=10, max_location_steps=8 * 40)

    assert [(r.first_batch, r.stop_batch, r.first_series, r.stop_series, r.start, r.stop) for r in regions] == [(0, 8, 0, 8, 0, 40)]


def test_plan_regions_follow_groups():
    plan = stateful_plan(n_series=8, n_times=40, timesteps=10, batch_size=4)

    regions = plan_regions(plan, timesteps=10, max_location_steps=4 * 40)

    assert [(r.first_batch, r.stop_batch, r.first_series, r.stop_series) for r in regions] == [(0, 4, 0, 4), (4, 8, 4, 8)]


def test_plan_regions_skip_padding_slots():
    plan = sequential_plan(n_samples=10, batch_size=4, remainder="pad")

    regions = plan_regions(plan, timesteps=5, max_location_steps=10_000)

    assert len(regions) == 1
    assert (regions[0].first_series, regions[0].stop_series) == (0, 10)


def stateful_job(data_file, tmp_path, name, **shapes):
    return normalize_job(
        train_job_dict(
            data_file,
            tmp_path / f"{name}.weights.h5",
            model={"hidden_layers": [{"type": "LSTM", "units": 4}]},
            shapes={"batch_size": 4, "timesteps": 10, "stateful": True, **shapes},
            training={"epochs": 1, "seed": 1, "remainder": "error"},
        )
    )


def test_stateful_job_leftover_locations_rejected(tmp_path):
    data_file = write_series_file(tmp_path / "ten.h5", n_locations=10, n_times=40)
    job = stateful_job(data_file, tmp_path, "ten")

    with pytest.raises(DataError) as caught:
        train_job(job)

    message = str(caught.value)
    assert "'a', 'b', 'c', 'y'" in message
    assert "10 series" in message
    assert "batch_size=4" in message
    assert "training.remainder to 'drop'" in message
    assert not (tmp_path / "ten.weights.h5").exists()


def test_stateful_job_leftover_steps_rejected(tmp_path):
    data_file = write_series_file(tmp_path / "steps.h5", n_locations=8, n_times=45)
    job = stateful_job(data_file, tmp_path, "steps")

    with pytest.raises(DataError, match=r"45 steps do not fill whole windows of timesteps=10.*timesteps that divides the 45 steps"):
        train_job(job)


def test_stateful_job_drop_is_logged_and_recorded(tmp_path, caplog):
    data_file = write_series_file(tmp_path / "ten.h5", n_locations=10, n_times=45)
    job = stateful_job(data_file, tmp_path, "dropped")
    job["training"]["remainder"] = "drop"

    with caplog.at_level(logging.INFO, logger="rnnjobs"):
        result = train_job(job)

    summary = read_model_metadata(result["output"])["data"]
    batches = summary["batches"]["training"]
    assert summary["left_out"] == {"training": {"series": 2, "steps_per_series": 5}}
    assert batches["batches"] == 2 * 4
    assert batches["windows"] == 8 * 4
    assert "'series': 2" in caplog.text


def test_stateful_job_validation_remainder_rejected(tmp_path):
    data_file = write_series_file(tmp_path / "ten.h5", n_locations=10, n_times=40)
    job = stateful_job(data_file, tmp_path, "validation")
    job["training"]["validation_split"] = 0.2

    with pytest.raises(DataError, match=r"validation data .*2 series do not fill whole stateful batches of 4"):
        train_job(job)


def write_samples_file(path, n_samples, timesteps=5, n_features=2):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5file:
        h5file["X"] = rng.normal(size=(n_samples, timesteps, n_features)).astype(np.float32)
        h5file["y"] = rng.normal(size=(n_samples, 1)).astype(np.float32)
    return str(path)


def samples_job(data_file, tmp_path, name, remainder="error", validation_split=0.0):
    return normalize_job(
        train_job_dict(
            data_file,
            tmp_path / f"{name}.weights.h5",
            data={"file": str(data_file), "layout": "samples", "x": "X", "y": "y"},
            model={"hidden_layers": [{"type": "LSTM", "units": 3}]},
            shapes={"batch_size": 4, "timesteps": 5, "stateful": True, "return_sequences": False},
            training={"epochs": 1, "seed": 1, "remainder": remainder, "validation_split": validation_split},
        )
    )


def test_stateful_samples_remainder_rejected(tmp_path):
    data_file = write_samples_file(tmp_path / "samples.h5", 10)

    with pytest.raises(DataError) as caught:
        train_job(samples_job(data_file, tmp_path, "samples"))

    message = str(caught.value)
    assert "datasets 'X' and 'y'" in message
    assert "10 samples do not fill whole batches of 4" in message
    assert "batch_size=4" in message
    assert "divides the number of samples" in message


def test_stateful_samples_validation_split_rejected(tmp_path):
    data_file = write_samples_file(tmp_path / "twenty.h5", 20)

    with pytest.raises(DataError, match=r"training data .*15 samples do not fill whole batches of 4"):
        train_job(samples_job(data_file, tmp_path, "twenty", validation_split=0.25))


def test_stateful_samples_drop_recorded(tmp_path):
    data_file = write_samples_file(tmp_path / "samples.h5", 10)

    result = train_job(samples_job(data_file, tmp_path, "dropped", remainder="drop"))

    summary = read_model_metadata(result["output"])["data"]
    assert summary["left_out"] == {"training": {"windows": 2}}
    assert summary["batches"]["training"]["windows"] == 8
