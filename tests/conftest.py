"""Shared fixtures: small real HDF5 files and job files in a temporary folder."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_DATA = os.path.join(REPO, "data", "raws_ca_202401.h5")


def write_series_file(path, n_locations=8, n_times=60, features=("a", "b", "c"), targets=("y",), seed=0):
    """Write a netCDF-style series file whose target depends on past features, and return its path."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n_times)
    with h5py.File(path, "w") as h5file:
        station = h5file.create_dataset("station", data=np.array([f"S{i:03d}" for i in range(n_locations)], dtype=h5py.string_dtype()))
        time = h5file.create_dataset("time", data=np.arange(n_times, dtype=np.int64) + 473352)
        time.attrs["units"] = "hours since 1970-01-01 00:00:00"
        station.make_scale("station")
        time.make_scale("time")
        values = {}
        for k, name in enumerate(features):
            phase = rng.uniform(0, 2 * np.pi, size=(n_locations, 1))
            values[name] = (np.sin(steps[None, :] / (3 + k) + phase) + 0.1 * rng.normal(size=(n_locations, n_times))).astype(np.float32)
        smoothed = np.zeros((n_locations, n_times), np.float32)
        for t in range(1, n_times):
            smoothed[:, t] = 0.8 * smoothed[:, t - 1] + 0.2 * sum(values.values())[:, t]
        for name in targets:
            values[name] = smoothed + 10.0
        for name, array in values.items():
            dataset = h5file.create_dataset(name, data=array)
            dataset.attrs["units"] = "percent" if name in targets else "1"
            dataset.dims[0].attach_scale(station)
            dataset.dims[1].attach_scale(time)
    return str(path)


def train_job_dict(data_file, model_file, **overrides):
    """Return a small train job as a dict; ``overrides`` replace whole sections."""
    job = {
        "kind": "train",
        "data": {"file": str(data_file), "features": ["a", "b", "c"], "targets": ["y"]},
        "model": {"hidden_layers": [{"type": "LSTM", "units": 6}, {"type": "Dense", "units": 4, "activation": "relu"}]},
        "shapes": {"batch_size": 4, "timesteps": 10, "stateful": False},
        "training": {"epochs": 2, "seed": 1, "learning_rate": 0.01},
        "output": {"model_file": str(model_file)},
    }
    job.update(overrides)
    return job


def forecast_job_dict(data_file, model_file, output_file, **overrides):
    """Return a forecast job as a dict."""
    job = {
        "kind": "forecast",
        "model_file": str(model_file),
        "data": {"file": str(data_file)},
        "output": {"file": str(output_file)},
    }
    job.update(overrides)
    return job


def write_job(path, job):
    """Write ``job`` as JSON to ``path`` and return the path as a string."""
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(job, stream, indent=2)
    return str(path)


def hold_open(path, mode):
    """Start a process that keeps ``path`` open in h5py ``mode`` until killed."""
    code = f"import h5py, time; f = h5py.File({str(path)!r}, {mode!r}); print('open', flush=True); time.sleep(120)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "open"
    return process


@pytest.fixture
def series_file(tmp_path):
    return write_series_file(tmp_path / "series.h5")
