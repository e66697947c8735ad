"""The lazy series reader: blocks read on demand equal the same part of a whole read."""

import h5py
import numpy as np
import pytest

from conftest import write_series_file
from rnnjobs.data import DataError, SeriesReader, read_series

FEATURES, TARGETS = ["a", "b", "c"], ["y"]


def series_spec(path, **extra):
    spec = {"file": str(path), "layout": "series", "features": FEATURES, "targets": TARGETS, "valid_range": {}, "missing_features": "error"}
    spec.update(extra)
    return spec


def write_gappy_file(path, n_locations=6, n_times=80):
    """Write a series file with runs of NaN in features and targets, some at block starts."""
    write_series_file(path, n_locations=n_locations, n_times=n_times)
    with h5py.File(path, "r+") as h5file:
        a = h5file["a"][()]
        a[1, 18:35] = np.nan  # a gap across the block start at step 20
        a[2, 0:5] = np.nan  # a leading gap
        a[3, 40] = np.nan
        h5file["a"][...] = a
        y = h5file["y"][()]
        y[0, 10:15] = np.nan
        y[4, 70] = 1e6
        h5file["y"][...] = y
    return str(path)


@pytest.mark.parametrize(
    "rows, start, stop",
    [(slice(0, 8), 0, 60), (slice(2, 5), 13, 41), (np.array([1, 4, 6]), 5, 6), (np.array([0, 7]), 0, 60)],
)
def test_block_equals_whole_read(series_file, rows, start, stop):
    spec = series_spec(series_file)
    whole = read_series(spec, FEATURES, TARGETS)

    with SeriesReader(spec, FEATURES, TARGETS) as reader:
        features, targets = reader.read(rows, start, stop)

    assert np.array_equal(features, whole.features[rows, start:stop])
    assert np.array_equal(targets, whole.targets[rows, start:stop])
    assert features.dtype == np.float32


def test_reader_coordinates_match_whole_read(series_file):
    spec = series_spec(series_file, exclude_locations=["S002"], time={"start": 10, "stop": 50})
    whole = read_series(spec, FEATURES, TARGETS)

    with SeriesReader(spec, FEATURES, TARGETS) as reader:
        features, _ = reader.read(slice(0, reader.n_series), 0, reader.n_times)

        assert (reader.n_series, reader.n_times) == (7, 40)
        assert list(reader.location_ids) == list(whole.location_ids)
        assert np.array_equal(reader.time_values, whole.time_values)
        assert reader.time_attrs == whole.time_attrs
        assert reader.units == whole.units
        assert reader.location_dim == "station"
    assert np.array_equal(features, whole.features)


def test_reader_time_location_axis_order(tmp_path):
    source = write_series_file(tmp_path / "rows.h5", n_locations=5, n_times=30)
    flipped = tmp_path / "columns.h5"
    with h5py.File(source, "r") as h5in, h5py.File(flipped, "w") as h5out:
        for name in FEATURES + TARGETS:
            h5out[name] = h5in[name][()].T
    spec = series_spec(flipped, axis_order="time,location")

    with SeriesReader(spec, FEATURES, TARGETS) as reader:
        features, _ = reader.read(np.array([0, 2, 4]), 3, 17)
    expected = read_series(series_spec(source), FEATURES, TARGETS).features[[0, 2, 4], 3:17]

    assert np.array_equal(features, expected)


@pytest.mark.parametrize("policy", ["ffill", "zero"])
@pytest.mark.parametrize("start", [0, 20, 21, 37])
def test_missing_feature_fill_equals_whole_read(tmp_path, policy, start):
    path = write_gappy_file(tmp_path / "gappy.h5")
    spec = series_spec(path, missing_features=policy)
    whole = read_series(spec, FEATURES, TARGETS)

    with SeriesReader(spec, FEATURES, TARGETS) as reader:
        features, _ = reader.read(slice(0, 6), start, 80)

    assert np.array_equal(features, whole.features[:, start:])


def test_forward_fill_looks_back_past_long_gap(tmp_path, monkeypatch):
    path = write_gappy_file(tmp_path / "gappy.h5")
    monkeypatch.setattr("rnnjobs.data.LOOKBACK_STEPS", 3)
    spec = series_spec(path, missing_features="ffill")
    whole = read_series(spec, FEATURES, TARGETS)

    with SeriesReader(spec, FEATURES, TARGETS) as reader:
        features, _ = reader.read(slice(1, 2), 30, 40)

    assert np.array_equal(features, whole.features[1:2, 30:40])
    assert features[0, 0, 0] == whole.features[1, 17, 0]


def test_missing_feature_error_names_position(tmp_path):
    path = write_gappy_file(tmp_path / "gappy.h5")

    with SeriesReader(series_spec(path), FEATURES, TARGETS) as reader:
        with pytest.raises(DataError, match=r"dataset 'a' has 5 missing .* first at \w+ 'S001', time index 30"):
            reader.read(slice(0, 6), 30, 40)


def test_targets_masked_and_counted(tmp_path):
    path = write_gappy_file(tmp_path / "gappy.h5")
    spec = series_spec(path, valid_range={"y": [0.0, 100.0]}, missing_features="zero")

    with SeriesReader(spec, FEATURES, TARGETS) as reader:
        _, targets = reader.read(slice(0, 6), 0, 80)
        counted_all = reader.masked_targets
        reader.read(slice(0, 6), 12, 80, count_stop=13)

        assert counted_all == 6
        assert reader.masked_targets == 6 + 1
    assert np.isnan(targets[0, 10:15, 0]).all()
    assert np.isnan(targets[4, 70, 0])


def test_float64_block_cast_and_range_checked(tmp_path):
    path = tmp_path / "wide.h5"
    write_series_file(path, n_locations=3, n_times=20)
    with h5py.File(path, "r+") as h5file:
        values = h5file["b"][()].astype(np.float64)
        values[2, 15] = 1e39
        del h5file["b"]
        h5file["b"] = values

    with SeriesReader(series_spec(path), FEATURES, TARGETS) as reader:
        features, _ = reader.read(slice(0, 3), 0, 10)
        assert features.dtype == np.float32
        with pytest.raises(DataError, match=r"dataset '/b' has 1 value\(s\) beyond the float32 range"):
            reader.read(slice(0, 3), 10, 20)


def test_reader_closes_file_on_bad_dataset(series_file):
    with pytest.raises(DataError, match="dataset 'nope' not found"):
        SeriesReader(series_spec(series_file), ["a", "nope"], TARGETS)

    with h5py.File(series_file, "a") as h5file:
        assert "a" in h5file


def test_reader_chunk_series(tmp_path):
    path = tmp_path / "chunked.h5"
    with h5py.File(path, "w") as h5file:
        for name in FEATURES + TARGETS:
            h5file.create_dataset(name, data=np.ones((40, 50), np.float32), chunks=(16, 25))

    with SeriesReader(series_spec(path), FEATURES, TARGETS) as reader:
        assert reader.chunk_series == 16
