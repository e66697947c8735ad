"""The command-line interface through click's CliRunner, on a slice of the real example data."""

import os

import pytest
from click.testing import CliRunner

from conftest import EXAMPLE_DATA, forecast_job_dict, train_job_dict, write_job
from rnnjobs.cli import main
from rnnjobs.modelfile import read_model_metadata


@pytest.fixture
def runner():
    return CliRunner()


def test_train_then_forecast_real_data(runner, tmp_path):
    model_file = tmp_path / "fm.weights.h5"
    forecast_file = tmp_path / "fm.nc"
    train = train_job_dict(
        EXAMPLE_DATA, model_file,
        data={
            "file": EXAMPLE_DATA, "features": ["Ed", "Ew", "rain"], "targets": ["fm"],
            "static_features": ["elev", "lat", "lon"],
            "locations": {"start": 0, "stop": 20}, "time": {"start": 0, "stop": 48},
            "valid_range": {"fm": [0.5, 60]},
        },
        shapes={"batch_size": 8, "timesteps": 12, "stride": 6},
        training={"epochs": 1, "seed": 3},
    )
    forecast = forecast_job_dict(
        EXAMPLE_DATA, model_file, forecast_file,
        data={"file": EXAMPLE_DATA, "locations": {"start": 15, "stop": 30}, "time": {"start": 0, "stop": 72}},
    )
    train_path = write_job(tmp_path / "train.json", train)
    forecast_path = write_job(tmp_path / "forecast.json", forecast)

    trained = runner.invoke(main, ["train", train_path])
    forecasted = runner.invoke(main, ["forecast", forecast_path])

    assert trained.exit_code == 0, trained.output
    assert forecasted.exit_code == 0, forecasted.output
    import h5py
    import xarray

    with h5py.File(EXAMPLE_DATA, "r") as source:
        expected_ids = [value.decode() for value in source["station"][15:30]]
        expected_times = source["time"][:72]
    weights_sha256 = read_model_metadata(str(model_file))["weights_sha256"]
    with xarray.open_dataset(forecast_file, engine="h5netcdf", decode_times=False) as dataset:
        assert dataset["fm"].dims == ("station", "time")
        assert dict(dataset.sizes) == {"station": 15, "time": 72}
        assert list(dataset["station"].values) == expected_ids
        assert list(dataset["time"].values) == list(expected_times)
        assert dataset["time"].attrs["units"] == "hours since 1970-01-01 00:00:00"
        assert dataset.attrs["featureType"] == "timeSeries"
        assert dataset.attrs["model_weights_sha256"] == weights_sha256
        assert dataset["fm"].attrs["units"] == "percent"
        assert bool(dataset["fm"].notnull().all())


def test_describe_prints_equal_counts(runner, tmp_path, series_file):
    job_path = write_job(tmp_path / "job.json", train_job_dict(series_file, tmp_path / "m.weights.h5"))

    result = runner.invoke(main, ["describe", job_path])

    assert result.exit_code == 0, result.output
    assert "training_model" in result.output
    assert "prediction_model" in result.output
    assert "(equal)" in result.output


INVALID_JOBS = [
    ("unknown layer type", {"model": {"hidden_layers": [{"type": "Transformer", "units": 4}]}}, "model.hidden_layers[0].type"),
    ("wrong field type", {"shapes": {"batch_size": "four", "timesteps": 10}}, "shapes.batch_size"),
    ("zero units", {"model": {"hidden_layers": [{"type": "LSTM", "units": 0}]}}, "model.hidden_layers[0].units"),
    ("missing section", {"output": None}, "output"),
]


@pytest.mark.parametrize("label,change,field", INVALID_JOBS, ids=[case[0] for case in INVALID_JOBS])
def test_invalid_job_exits_2(runner, tmp_path, series_file, label, change, field):
    model_file = tmp_path / "never.weights.h5"
    job = train_job_dict(series_file, model_file, **change)
    job = {key: value for key, value in job.items() if value is not None}
    job_path = write_job(tmp_path / "bad.json", job)

    result = runner.invoke(main, ["train", job_path])

    assert result.exit_code == 2
    assert "bad.json" in result.output
    assert field in result.output
    assert not model_file.exists()


def test_missing_dataset_fails_without_output(runner, tmp_path, series_file):
    model_file = tmp_path / "never.weights.h5"
    job = train_job_dict(series_file, model_file, data={"file": series_file, "features": ["a", "nope"], "targets": ["y"]})
    job_path = write_job(tmp_path / "missing.json", job)

    result = runner.invoke(main, ["train", job_path])

    assert result.exit_code in (1, 2)
    assert "'nope' not found" in result.output
    assert not model_file.exists()
    assert not [name for name in os.listdir(tmp_path) if "rnnjobs-tmp" in name]
