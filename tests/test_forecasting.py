"""Forecasts in chunks of locations and time equal whole-array forecasts, with spin-up and any location count."""

import os
import shutil

import h5py
import numpy as np
import pytest

from conftest import forecast_job_dict, train_job_dict, write_series_file
from rnnjobs import models
from rnnjobs.data import DataError, SeriesReader, read_series
from rnnjobs.forecasting import ScaledFeatures, forecast_job, predict_series
from rnnjobs.modelfile import load_model_weights, read_model_metadata
from rnnjobs.scaling import Scaler
from rnnjobs.spec import normalize_job
from rnnjobs.training import train_job

FEATURES = 3


def architecture(hidden_layers):
    return {"hidden_layers": hidden_layers, "output_activation": "linear", "n_features": FEATURES, "n_targets": 1, "return_sequences": True}


STACKED = architecture([{"type": "LSTM", "units": 5}, {"type": "LSTM", "units": 4}, {"type": "Dense", "units": 3, "activation": "relu"}])


def models_sharing_weights(arch, tmp_path, batch_size=4, timesteps=20, stateful=False):
    """Return a training model with random weights and prediction models (plain, carrying state) with the same weights."""
    training = models.build_training_model(arch, batch_size, timesteps, stateful=stateful)
    path = str(tmp_path / "shared.weights.h5")
    training.save_weights(path)
    layout = {"weight_layout": models.weight_layout(training)}
    plain = models.build_prediction_model(arch)
    carrying = models.build_prediction_model(arch, carry_state=True)
    load_model_weights(plain, path, layout)
    load_model_weights(carrying, path, layout)
    return training, plain, carrying


def chunked_forecast(carrying, arch, features, location_chunk, time_chunk):
    result = np.full(features.shape[:2] + (1,), np.nan, np.float32)

    def store(rows, steps, predictions):
        assert np.isnan(result[rows, steps]).all(), "a chunk was written twice"
        result[rows, steps] = predictions

    predict_series(carrying, arch, features, location_chunk, time_chunk, store)
    return result


def test_fixed_flexible_and_chunked_agree(tmp_path):
    training, plain, carrying = models_sharing_weights(STACKED, tmp_path)
    x = np.random.default_rng(0).normal(size=(4, 20, FEATURES)).astype(np.float32)

    fixed = training.predict_on_batch(x)
    flexible = plain.predict_on_batch(x)
    chunked = chunked_forecast(carrying, STACKED, x, location_chunk=4, time_chunk=5)
    again = chunked_forecast(carrying, STACKED, x, location_chunk=4, time_chunk=5)

    assert np.max(np.abs(flexible - fixed)) <= 1e-5
    assert np.max(np.abs(chunked - fixed)) <= 1e-5
    assert np.max(np.abs(chunked - flexible)) <= 1e-5
    assert np.array_equal(again, chunked)


@pytest.mark.parametrize("location_chunk, time_chunk", [(7, 13), (1, 150), (50, 1), (50, 150), (16, 64)])
def test_chunked_equals_whole(tmp_path, location_chunk, time_chunk):
    _, plain, carrying = models_sharing_weights(STACKED, tmp_path)
    x = np.random.default_rng(1).normal(size=(23, 150, FEATURES)).astype(np.float32)

    whole = plain.predict_on_batch(x)
    chunked = chunked_forecast(carrying, STACKED, x, location_chunk, time_chunk)

    assert not np.isnan(chunked).any()
    assert np.max(np.abs(chunked - whole)) <= 1e-5


def test_location_forecast_independent_of_chunk(tmp_path):
    _, _, carrying = models_sharing_weights(STACKED, tmp_path)
    x = np.random.default_rng(2).normal(size=(9, 40, FEATURES)).astype(np.float32)

    together = chunked_forecast(carrying, STACKED, x, location_chunk=9, time_chunk=15)
    for location in (0, 4, 8):
        alone = chunked_forecast(carrying, STACKED, x[location : location + 1], location_chunk=1, time_chunk=15)
        assert np.max(np.abs(alone[0] - together[location])) <= 1e-6


class RecordingFeatures:
    """Features served by slicing, recording the shape of every chunk asked for."""

    def __init__(self, values):
        self.values = values
        self.shape = values.shape
        self.chunks = []

    def __getitem__(self, key):
        block = self.values[key]
        self.chunks.append(block.shape)
        return block


def test_chunks_bounded_by_chunk_sizes(tmp_path):
    _, _, carrying = models_sharing_weights(STACKED, tmp_path)
    features = RecordingFeatures(np.random.default_rng(3).normal(size=(30, 100, FEATURES)).astype(np.float32))

    chunked_forecast(carrying, STACKED, features, location_chunk=8, time_chunk=32)

    assert len(features.chunks) == 4 * 4
    assert max(shape[0] for shape in features.chunks) == 8
    assert max(shape[1] for shape in features.chunks) == 32


@pytest.fixture(scope="module")
def lstm_model_file(tmp_path_factory):
    """A small stateful LSTM(6) model trained with batch size 4, and its training data."""
    folder = tmp_path_factory.mktemp("model")
    data_file = write_series_file(folder / "train.h5", n_locations=8, n_times=60)
    job = normalize_job(
        train_job_dict(
            data_file,
            folder / "lstm.weights.h5",
            model={"hidden_layers": [{"type": "LSTM", "units": 6}]},
            shapes={"batch_size": 4, "timesteps": 10, "stateful": True},
            training={"epochs": 1, "seed": 1, "learning_rate": 0.01},
        )
    )
    return train_job(job)["output"], data_file


def run_forecast(tmp_path, model_file, data_file, name, **overrides):
    output = tmp_path / f"{name}.nc"
    forecast_job(normalize_job(forecast_job_dict(data_file, model_file, output, **overrides)))
    with h5py.File(output, "r") as h5file:
        return h5file["y"][()], [v.decode() if isinstance(v, bytes) else v for v in h5file["station"][()]]


def in_memory_forecast(model_file, data_file, locations=None):
    """Forecast with the prediction model on the whole array, in the original units."""
    metadata = read_model_metadata(model_file)
    spec = {"file": data_file, "features": metadata["feature_names"], "valid_range": {}, "missing_features": "error"}
    if locations is not None:
        spec["locations"] = locations
    data = read_series(spec, metadata["feature_names"])
    model = models.build_prediction_model(metadata["architecture"])
    load_model_weights(model, model_file, metadata)
    scaled = Scaler.from_dict(metadata["scalers"]["features"]).transform(data.features)
    predictions = model.predict_on_batch(scaled)
    return Scaler.from_dict(metadata["scalers"]["targets"]).inverse_transform(predictions)[..., 0]


@pytest.mark.parametrize("locations, expected_ids", [(["S000", "S001", "S002"], ["S000", "S001", "S002"]), (["S002"], ["S002"])])
def test_fewer_locations_than_training_batch(lstm_model_file, tmp_path, locations, expected_ids):
    model_file, data_file = lstm_model_file
    metadata = read_model_metadata(model_file)

    forecast, ids = run_forecast(tmp_path, model_file, data_file, f"n{len(locations)}", data={"file": data_file, "locations": locations})

    assert forecast.shape == (len(locations), 60)
    assert ids == expected_ids
    assert np.isfinite(forecast).all()

    # The stateful training model, fed two consecutive windows of the first 4 locations.
    training = models.build_training_model(metadata["architecture"], 4, 10, stateful=True)
    load_model_weights(training, model_file, metadata)
    models.reset_states(training)
    whole = read_series({"file": data_file, "valid_range": {}, "missing_features": "error"}, metadata["feature_names"])
    scaled = Scaler.from_dict(metadata["scalers"]["features"]).transform(whole.features[:4])
    expected = np.concatenate([training.predict_on_batch(scaled[:, :10]), training.predict_on_batch(scaled[:, 10:20])], axis=1)
    with SeriesReader({"file": data_file, "locations": locations, "valid_range": {}, "missing_features": "error"}, metadata["feature_names"]) as reader:
        features = ScaledFeatures(reader, Scaler.from_dict(metadata["scalers"]["features"]))
        prediction = models.build_prediction_model(metadata["architecture"], carry_state=True)
        load_model_weights(prediction, model_file, metadata)
        got = chunked_forecast(prediction, metadata["architecture"], features, location_chunk=4, time_chunk=7)

    rows = [int(name[1:]) for name in locations]
    assert np.max(np.abs(got[:, :20] - expected[rows])) <= 1e-6
    inverse = Scaler.from_dict(metadata["scalers"]["targets"]).inverse_transform(got)[..., 0]
    assert np.array_equal(forecast, inverse)


def test_forecast_300_locations_2000_steps_in_chunks(lstm_model_file, tmp_path):
    model_file, _ = lstm_model_file
    data_file = write_series_file(tmp_path / "big.h5", n_locations=300, n_times=2_000, targets=(), seed=4)

    forecast, _ = run_forecast(tmp_path, model_file, data_file, "big", data={"file": data_file}, chunks={"locations": 64, "time": 300})
    expected = in_memory_forecast(model_file, data_file)

    assert forecast.shape == (300, 2_000)
    assert np.max(np.abs(forecast - expected)) <= 1e-5 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("spinup, time_chunk", [(15, 7), (14, 7), (30, 60), (59, 10)])
def test_spinup_output_length_and_values(lstm_model_file, tmp_path, spinup, time_chunk):
    model_file, data_file = lstm_model_file

    forecast, _ = run_forecast(tmp_path, model_file, data_file, f"spin{spinup}", spinup=spinup, chunks={"locations": 3, "time": time_chunk})
    expected = in_memory_forecast(model_file, data_file)

    with h5py.File(tmp_path / f"spin{spinup}.nc", "r") as h5file:
        times = h5file["time"][()]
        assert h5file.attrs["spinup_steps"] == spinup
    assert forecast.shape == (8, 60 - spinup)
    assert times[0] == 473352 + spinup
    assert np.max(np.abs(forecast - expected[:, spinup:])) <= 1e-5 * max(1.0, np.abs(expected).max())


def test_second_forecast_identical(lstm_model_file, tmp_path):
    model_file, data_file = lstm_model_file
    chunks = {"locations": 3, "time": 9}

    first, _ = run_forecast(tmp_path, model_file, data_file, "first", chunks=chunks)
    second, _ = run_forecast(tmp_path, model_file, data_file, "second", chunks=chunks)

    assert np.array_equal(first, second)


def test_forward_fill_across_time_chunks(lstm_model_file, tmp_path):
    model_file, data_file = lstm_model_file
    gappy = tmp_path / "gappy.h5"
    shutil.copy(data_file, gappy)
    with h5py.File(gappy, "r+") as h5file:
        h5file["a"][2, 18:33] = np.nan
    data = {"file": str(gappy), "missing_features": "ffill"}

    chunked, _ = run_forecast(tmp_path, model_file, str(gappy), "chunked", data=data, chunks={"locations": 8, "time": 10})
    whole, _ = run_forecast(tmp_path, model_file, str(gappy), "whole", data=data, chunks={"locations": 8, "time": 60})

    assert np.max(np.abs(chunked - whole)) <= 1e-5 * max(1.0, np.abs(whole).max())


def test_missing_feature_in_later_chunk_writes_nothing(lstm_model_file, tmp_path):
    model_file, data_file = lstm_model_file
    gappy = tmp_path / "late_gap.h5"
    shutil.copy(data_file, gappy)
    with h5py.File(gappy, "r+") as h5file:
        h5file["b"][6, 47] = np.nan
    output = tmp_path / "late_gap.nc"
    job = normalize_job(forecast_job_dict(gappy, model_file, output, chunks={"locations": 4, "time": 10}))

    with pytest.raises(DataError, match=r"dataset 'b' has 1 missing .* first at \w+ 'S006', time index 47"):
        forecast_job(job)

    assert not output.exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".late_gap.nc")]


def test_bias_correction_adds_mean_error(tmp_path):
    data_file = write_series_file(tmp_path / "series.h5", n_locations=5, n_times=40)
    model_file = tmp_path / "m.weights.h5"
    train_job(normalize_job(train_job_dict(data_file, model_file, training={"epochs": 1, "seed": 1})))
    raw_job = normalize_job(forecast_job_dict(data_file, model_file, tmp_path / "raw.nc"))
    forecast_job(raw_job)
    with h5py.File(tmp_path / "raw.nc", "r") as raw_file:
        raw = raw_file["y"][()]

    # Observations are the raw forecast shifted by a known offset per location;
    # location 4 has no valid observation in the correction period.
    shifts = np.array([1.0, -2.0, 0.5, 3.0, 7.0], np.float32)
    observed = raw + shifts[:, None]
    observed[4, :30] = np.nan
    observed[0, 5] = 1000.0
    with h5py.File(data_file, "a") as h5file:
        h5file["obs"] = observed
    corrected_job = normalize_job(forecast_job_dict(
        data_file, model_file, tmp_path / "corrected.nc",
        bias_correction={"observed": ["obs"], "time": {"start": 0, "stop": 30}, "valid_range": {"obs": [-100, 100]}},
    ))
    forecast_job(corrected_job)

    with h5py.File(tmp_path / "corrected.nc", "r") as corrected_file:
        corrected = corrected_file["y"][()]
        offsets = corrected_file["y_bias_correction"][()]
    expected_offsets = np.append(shifts[:4], 0.0)
    assert np.allclose(offsets, expected_offsets, atol=1e-4)
    assert np.allclose(corrected, raw + expected_offsets[:, None], atol=1e-4)


def test_bias_correction_period_outside_data_rejected(tmp_path, series_file):
    with pytest.raises(Exception, match=r"bias_correction.time: \[0, 80\) must lie within"):
        normalize_job(forecast_job_dict(
            series_file, tmp_path / "m.weights.h5", tmp_path / "f.nc",
            data={"file": series_file, "time": {"start": 0, "stop": 60}},
            bias_correction={"time": {"start": 0, "stop": 80}},
        ))
