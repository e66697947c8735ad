"""Up-to-date checks of existing outputs, on real model and forecast files."""

import os

import pytest

from conftest import forecast_job_dict, train_job_dict
from rnnjobs.forecasting import forecast_job
from rnnjobs.resume import is_up_to_date
from rnnjobs.spec import normalize_job
from rnnjobs.training import train_job


@pytest.fixture
def trained(series_file, tmp_path):
    job = normalize_job(train_job_dict(series_file, tmp_path / "m.weights.h5", training={"epochs": 1, "seed": 1}))
    train_job(job)
    return job


def test_fresh_model_file_is_up_to_date(trained):
    assert is_up_to_date(trained)


def test_missing_output_is_not_up_to_date(series_file, tmp_path):
    job = normalize_job(train_job_dict(series_file, tmp_path / "none.weights.h5"))

    assert not is_up_to_date(job)


def test_changed_spec_is_not_up_to_date(trained, series_file):
    changed = normalize_job(train_job_dict(series_file, trained["output"]["model_file"], training={"epochs": 2, "seed": 1}))

    assert not is_up_to_date(changed)


def test_changed_input_is_not_up_to_date(trained, series_file):
    stat = os.stat(series_file)
    os.utime(series_file, (stat.st_atime, stat.st_mtime + 10))

    assert not is_up_to_date(trained)


def test_forecast_follows_model_file(trained, series_file, tmp_path):
    job = normalize_job(forecast_job_dict(series_file, trained["output"]["model_file"], tmp_path / "f.nc"))
    forecast_job(job)
    assert is_up_to_date(job)

    train_job(trained)

    assert not is_up_to_date(job)


def test_file_without_record_is_not_up_to_date(series_file, tmp_path):
    job = normalize_job(forecast_job_dict(series_file, tmp_path / "m.weights.h5", tmp_path / "f.nc"))
    with open(job["output"]["file"], "wb") as stream:
        stream.write(b"not hdf5")

    assert not is_up_to_date(job)
