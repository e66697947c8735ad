"""Bad job files and bad data: each is rejected before any work, with a clear message and no output.

Every kind of problem is one row of CASES. A row's builder makes the bad files
in a temporary folder and returns the jobs. The test runs ``rnnjobs validate``
and then the command that would run the jobs, and checks the exit status, the
key words of the message and that no output exists.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, forecast_job_dict, hold_open, train_job_dict, write_job, write_series_file
from rnnjobs.cli import main
from rnnjobs.modelfile import read_model_metadata
from rnnjobs.spec import normalize_job
from rnnjobs.training import train_job

# Written by the module's model_file fixture: features a, b, c and target y.
MODEL_FEATURES = ["a", "b", "c"]


def write_samples_file(path, x, y, x_name="X", y_name="y"):
    """Write the samples layout with datasets ``x_name`` and ``y_name`` and return the path."""
    with h5py.File(path, "w") as h5file:
        h5file.create_dataset(x_name, data=x)
        h5file.create_dataset(y_name, data=y)
    return str(path)


def samples(n_samples=10, timesteps=7, n_features=3, n_targets=1, seed=0):
    """Return finite float32 ``X (samples, timesteps, features)`` and ``y (samples, targets)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, timesteps, n_features)).astype(np.float32)
    y = x[:, -1, :n_targets].copy()
    return x, y


def samples_job(data_file, tmp_path, timesteps=7, batch_size=4, stateful=False, training=None, **data):
    """Return a train job in the samples layout, training on the last step of each sample."""
    return train_job_dict(
        data_file,
        tmp_path / "out" / "model.weights.h5",
        data={"file": str(data_file), "layout": "samples", "x": "X", **data},
        shapes={"batch_size": batch_size, "timesteps": timesteps, "stateful": stateful, "return_sequences": False},
        training=training or {"epochs": 1, "seed": 1},
    )


def series_job(data_file, tmp_path, **overrides):
    return train_job_dict(data_file, tmp_path / "out" / "model.weights.h5", **overrides)


def forecast_job(data_file, model_file, tmp_path, **overrides):
    return forecast_job_dict(data_file, model_file, tmp_path / "out" / "forecast.nc", **overrides)


def output_of(job):
    return job["output"]["model_file"] if job["kind"] == "train" else job["output"]["file"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """Train a tiny model on features a, b, c once for the forecast cases."""
    folder = tmp_path_factory.mktemp("model")
    data_file = write_series_file(folder / "train.h5", n_locations=8, n_times=30)
    job = train_job_dict(
        data_file, folder / "m.weights.h5",
        model={"hidden_layers": [{"type": "LSTM", "units": 3}]},
        shapes={"batch_size": 4, "timesteps": 10},
        training={"epochs": 1, "seed": 1},
    )
    return train_job(normalize_job(job))["output"]


# Builders: each makes the bad input in tmp_path and returns the jobs of one run.


def schema_error(tmp_path, model):
    layers = [{"type": "LSTM", "units": 4}, {"type": "Dense", "units": 3}, {"type": "Dense", "units": 0}]
    return [series_job(write_series_file(tmp_path / "d.h5"), tmp_path, model={"hidden_layers": layers})]


def several_schema_errors(tmp_path, model):
    job = series_job(write_series_file(tmp_path / "d.h5"), tmp_path, shapes={"batch_size": 0, "timesteps": 10})
    job["training"]["learning_rte"] = 0.1
    job["output"]["model_file"] = str(tmp_path / "out" / "site01.h5")
    return [job]


def unknown_layer(tmp_path, model):
    return [series_job(write_series_file(tmp_path / "d.h5"), tmp_path, model={"hidden_layers": [{"type": "Transformer", "units": 4}]})]


def return_sequences_against_targets(tmp_path, model):
    x, y = samples()
    job = samples_job(write_samples_file(tmp_path / "s.h5", x, y), tmp_path)
    job["shapes"]["return_sequences"] = True
    return [job]


def return_sequences_without_recurrent_layer(tmp_path, model):
    return [
        series_job(
            write_series_file(tmp_path / "d.h5"), tmp_path,
            model={"hidden_layers": [{"type": "Dense", "units": 4}]},
            shapes={"batch_size": 4, "timesteps": 10, "return_sequences": False},
        )
    ]


def model_file_name(name):
    def build(tmp_path, model):
        job = series_job(write_series_file(tmp_path / "d.h5"), tmp_path)
        job["output"]["model_file"] = str(tmp_path / "out" / name)
        return [job]

    return build


def two_writers(tmp_path, model):
    data_file = write_series_file(tmp_path / "d.h5")
    return [series_job(data_file, tmp_path, name="first"), series_job(data_file, tmp_path, name="second")]


def output_is_other_input(tmp_path, model):
    first = series_job(write_series_file(tmp_path / "d.h5"), tmp_path, name="first")
    second = series_job(write_series_file(tmp_path / "e.h5"), tmp_path, name="second")
    second["output"]["model_file"] = str(tmp_path / "d.weights.h5")
    first["data"]["file"] = second["output"]["model_file"]
    return [first, second]


def timesteps_beyond_time_range(tmp_path, model):
    data_file = write_series_file(tmp_path / "d.h5")
    job = series_job(data_file, tmp_path, shapes={"batch_size": 4, "timesteps": 30})
    job["data"]["time"] = {"start": 0, "stop": 20}
    return [job]


def timesteps_beyond_series(tmp_path, model):
    data_file = write_series_file(tmp_path / "d.h5", n_locations=80, n_times=20)
    return [series_job(data_file, tmp_path, shapes={"batch_size": 4, "timesteps": 30})]


def missing_file(tmp_path, model):
    return [series_job(tmp_path / "nowhere.h5", tmp_path)]


def missing_dataset(tmp_path, model):
    job = series_job(write_series_file(tmp_path / "d.h5"), tmp_path)
    job["data"]["features"] = ["a", "nope"]
    return [job]


def not_hdf5(tmp_path, model):
    path = tmp_path / "d.h5"
    path.write_text("station,time,a\nS000,0,1.0\n")
    return [series_job(path, tmp_path)]


def netcdf3(tmp_path, model):
    path = tmp_path / "d.nc"
    path.write_bytes(b"CDF\x01" + bytes(60))
    return [series_job(path, tmp_path)]


def truncated(tmp_path, model):
    path = write_series_file(tmp_path / "d.h5")
    size = os.path.getsize(path)
    with open(path, "r+b") as stream:
        stream.truncate(size // 2)
    return [series_job(path, tmp_path)]


def corrupt_chunk(tmp_path, model):
    path = write_series_file(tmp_path / "d.h5")
    with h5py.File(path, "a") as h5file:
        del h5file["b"]
        dataset = h5file.create_dataset("b", data=np.ones((8, 60), np.float32), chunks=(8, 60), compression="gzip")
        dataset.dims[0].attach_scale(h5file["station"])
        dataset.dims[1].attach_scale(h5file["time"])
        chunk = dataset.id.get_chunk_info(0)
    with open(path, "r+b") as stream:
        stream.seek(chunk.byte_offset)
        stream.write(b"\xff" * chunk.size)
    return [series_job(path, tmp_path)]


def wrong_rank_series(tmp_path, model):
    path = write_series_file(tmp_path / "d.h5")
    with h5py.File(path, "a") as h5file:
        h5file.create_dataset("cube", data=np.zeros((8, 60, 2), np.float32))
    job = series_job(path, tmp_path)
    job["data"]["features"] = ["a", "cube"]
    return [job]


def wrong_rank_samples(tmp_path, model):
    x, y = samples()
    return [samples_job(write_samples_file(tmp_path / "s.h5", x[:, :, 0], y), tmp_path)]


def feature_count_samples(tmp_path, model):
    x, y = samples(n_features=4)
    return [samples_job(write_samples_file(tmp_path / "s.h5", x, y), tmp_path, features=["a", "b", "c"])]


def feature_count_forecast(tmp_path, model):
    path = write_series_file(tmp_path / "in.h5", features=("a", "b", "c", "d"))
    return [forecast_job(path, model, tmp_path, data={"file": path, "features": ["a", "b", "c", "d"]})]


def series_axes_reversed(tmp_path, model):
    path = tmp_path / "d.h5"
    write_column_major_series(path)
    return [series_job(path, tmp_path)]


def write_column_major_series(path):
    """Write series as MATLAB does: each variable shaped (time, location) on the file's axes."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5file:
        station = h5file.create_dataset("station", data=np.array([f"S{i}" for i in range(8)], dtype=h5py.string_dtype()))
        time = h5file.create_dataset("time", data=np.arange(60))
        time.attrs["units"] = "hours since 2024-01-01 00:00:00"
        station.make_scale("station")
        time.make_scale("time")
        for name in ("a", "b", "c", "y"):
            dataset = h5file.create_dataset(name, data=rng.normal(size=(60, 8)).astype(np.float32))
            dataset.dims[0].attach_scale(time)
            dataset.dims[1].attach_scale(station)
    return str(path)


def samples_axes_reversed(tmp_path, model):
    x, y = samples()
    return [samples_job(write_samples_file(tmp_path / "s.h5", x.T, y.T), tmp_path, features=["a", "b", "c"])]


def string_dataset(tmp_path, model):
    x, y = samples()
    path = write_samples_file(tmp_path / "s.h5", np.array(["1.0"] * x.size, dtype=h5py.string_dtype()).reshape(x.shape), y)
    return [samples_job(path, tmp_path)]


def beyond_float32(tmp_path, model):
    x, y = samples()
    x = x.astype(np.float64)
    x[4, 2, 0] = 1e39
    return [samples_job(write_samples_file(tmp_path / "s.h5", x, y), tmp_path)]


def nan_in_samples(tmp_path, model):
    x, y = samples()
    x[2, 3, 1] = np.nan
    return [samples_job(write_samples_file(tmp_path / "s.h5", x, y), tmp_path, features=["a", "b", "c"])]


def inf_in_samples(tmp_path, model):
    x, y = samples()
    x[5, 0, 2] = np.inf
    return [samples_job(write_samples_file(tmp_path / "s.h5", x, y), tmp_path)]


def nan_in_series(tmp_path, model):
    path = write_series_file(tmp_path / "d.h5")
    with h5py.File(path, "a") as h5file:
        h5file["b"][3, 17] = np.nan
        h5file["b"][5, 2] = np.nan
    return [series_job(path, tmp_path)]


def nan_in_forecast_input(tmp_path, model):
    path = write_series_file(tmp_path / "in.h5")
    with h5py.File(path, "a") as h5file:
        h5file["c"][1, 5] = np.nan
    return [forecast_job(path, model, tmp_path)]


def stateful_remainder(tmp_path, model):
    x, y = samples(n_samples=10, timesteps=5, n_features=2)
    return [samples_job(write_samples_file(tmp_path / "s.h5", x, y), tmp_path, timesteps=5, stateful=True)]


def stateful_remainder_with_validation(tmp_path, model):
    x, y = samples(n_samples=20, timesteps=5, n_features=2)
    job = samples_job(
        write_samples_file(tmp_path / "s.h5", x, y), tmp_path, timesteps=5, stateful=True,
        training={"epochs": 1, "validation_split": 0.25},
    )
    return [job]


def stateful_series_remainder(tmp_path, model):
    path = write_series_file(tmp_path / "d.h5", n_locations=10)
    return [series_job(path, tmp_path, shapes={"batch_size": 4, "timesteps": 10, "stateful": True})]


def stateful_series_leftover_steps(tmp_path, model):
    path = write_series_file(tmp_path / "d.h5", n_locations=16, n_times=48)
    return [series_job(path, tmp_path, shapes={"batch_size": 8, "timesteps": 10, "stateful": True})]


def static_nan_with_fill(tmp_path, model):
    path = write_series_file(tmp_path / "d.h5")
    with h5py.File(path, "a") as h5file:
        h5file["elev"] = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0, 8.0])
    job = series_job(path, tmp_path)
    job["data"]["static_features"] = ["elev"]
    job["data"]["missing_features"] = "ffill"
    return [job]


def forecast_feature_names(tmp_path, model):
    # The input file does not exist: the model mismatch must be found before any input is read.
    return [forecast_job(tmp_path / "never_read.h5", model, tmp_path, data={"file": str(tmp_path / "never_read.h5"), "features": ["a", "b", "x"]})]


def forecast_architecture(tmp_path, model):
    tampered = tmp_path / "tampered.weights.h5"
    tampered.write_bytes(open(model, "rb").read())
    with h5py.File(tampered, "a") as h5file:
        kernel = next(name for name in _datasets(h5file["layers"]) if h5file["layers"][name].shape == (3, 12))
        del h5file["layers"][kernel]
        h5file["layers"].create_dataset(kernel, data=np.zeros((3, 16), np.float32))
    path = write_series_file(tmp_path / "in.h5")
    return [forecast_job(path, tampered, tmp_path)]


def forecast_weights_changed(tmp_path, model):
    changed = tmp_path / "changed.weights.h5"
    changed.write_bytes(open(model, "rb").read())
    with h5py.File(changed, "a") as h5file:
        bias = next(name for name in _datasets(h5file["layers"]) if h5file["layers"][name].shape == (1,))
        h5file["layers"][bias][...] += 1.0
    path = write_series_file(tmp_path / "in.h5")
    return [forecast_job(path, changed, tmp_path)]


def _datasets(group):
    names = []
    group.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names


def forecast_of_unnamed_samples(tmp_path, model):
    x, y = samples()
    train = samples_job(write_samples_file(tmp_path / "s.h5", x, y), tmp_path)
    path = write_series_file(tmp_path / "in.h5")
    return [train, forecast_job(path, train["output"]["model_file"], tmp_path)]


def forecast_model_missing(tmp_path, model):
    path = write_series_file(tmp_path / "in.h5")
    return [forecast_job(path, tmp_path / "absent.weights.h5", tmp_path)]


def forecast_model_not_rnnjobs(tmp_path, model):
    other = tmp_path / "other.weights.h5"
    with h5py.File(other, "w") as h5file:
        h5file["layers/dense/vars/0"] = np.zeros((3, 1))
    path = write_series_file(tmp_path / "in.h5")
    return [forecast_job(path, other, tmp_path)]


def spinup_too_long(tmp_path, model):
    path = write_series_file(tmp_path / "in.h5", n_times=20)
    return [forecast_job(path, model, tmp_path, spinup=20)]


def output_folder_is_file(tmp_path, model):
    job = series_job(write_series_file(tmp_path / "d.h5"), tmp_path)
    (tmp_path / "blocker").write_text("")
    job["output"]["model_file"] = str(tmp_path / "blocker" / "m.weights.h5")
    return [job]


def valid_range_typo(tmp_path, model):
    job = series_job(write_series_file(tmp_path / "d.h5"), tmp_path)
    job["data"]["valid_range"] = {"Y": [0, 100]}
    return [job]


@dataclass
class Case:
    """One kind of bad input: how to build it and the words its message must contain."""

    build: object
    words: list
    exit_code: int = 2
    absent: list = field(default_factory=list)


CASES = {
    "schema error": Case(schema_error, ["model.hidden_layers[2].units: must be a positive integer, got 0"]),
    "all errors at once": Case(
        several_schema_errors,
        ["shapes.batch_size: must be a positive integer, got 0", "training.learning_rte: unknown field", "learning_rate", "site01.weights.h5"],
    ),
    "unknown layer type": Case(unknown_layer, ["model.hidden_layers[0].type", "'Transformer'", "'LSTM'"]),
    "return_sequences vs targets": Case(return_sequences_against_targets, ["'/y'", "one target per sample", "return_sequences"]),
    "return_sequences without RNN": Case(return_sequences_without_recurrent_layer, ["shapes.return_sequences", "recurrent layer"]),
    "model file .h5": Case(model_file_name("site01.h5"), ["output.model_file", "'site01.h5'", "'site01.weights.h5'"]),
    "model file .hdf5": Case(model_file_name("site01.hdf5"), ["output.model_file", "'site01.hdf5'", "'site01.weights.h5'"]),
    "model file no suffix": Case(model_file_name("site01"), ["output.model_file", "'site01'", "'site01.weights.h5'"]),
    "two writers": Case(two_writers, ["output.model_file", "model.weights.h5", "also written by"]),
    "output is an input": Case(output_is_other_input, ["output.model_file", "d.weights.h5", "is the input data.file"]),
    "timesteps beyond time range": Case(timesteps_beyond_time_range, ["shapes.timesteps", "30", "20 steps"]),
    "timesteps beyond series": Case(timesteps_beyond_series, ["d.h5", "shapes.timesteps", "30", "20 time steps", "'/a'", "axis_order"]),
    "missing file": Case(missing_file, ["nowhere.h5", "not found"]),
    "missing dataset": Case(missing_dataset, ["d.h5", "'nope' not found", "datasets in the file", "a, b, c"]),
    "not HDF5": Case(not_hdf5, ["d.h5", "not an HDF5 file"]),
    "netCDF-3": Case(netcdf3, ["d.nc", "not an HDF5 file", "netCDF-3", "nccopy"]),
    "truncated": Case(truncated, ["d.h5", "truncated"], absent=["HDF5_USE_FILE_LOCKING"]),
    "corrupt chunk": Case(corrupt_chunk, ["d.h5", "'/b'", "cannot be read", "damaged"]),
    "wrong rank series": Case(wrong_rank_series, ["d.h5", "'/cube'", "(8, 60, 2)", "expected 2 dimensions"]),
    "wrong rank samples": Case(wrong_rank_samples, ["s.h5", "'/X'", "(10, 7)", "expected 3 dimensions"]),
    "feature count samples": Case(feature_count_samples, ["s.h5", "'/X'", "expected 3 features", "got 4"]),
    "feature count forecast": Case(feature_count_forecast, ["data.features", "expected 3 features (a, b, c)", "got 4 (a, b, c, d)"]),
    "series axes reversed": Case(series_axes_reversed, ["d.h5", "'/a'", "(60, 8)", "reversed", "data.axis_order to 'time,location'"]),
    "samples axes reversed": Case(samples_axes_reversed, ["s.h5", "'/X'", "(3, 7, 10)", "data.axis_order to 'features,timesteps,samples'"]),
    "string dataset": Case(string_dataset, ["s.h5", "'/X'", "text", "expected integer or floating-point"]),
    "beyond float32": Case(beyond_float32, ["s.h5", "'/X'", "beyond the float32 range", "1e+39", "sample 4, timestep 2"]),
    "NaN in samples": Case(nan_in_samples, ["s.h5", "'/X'", "1 NaN", "sample 2, timestep 3, feature 'b'", "missing_features"]),
    "inf in samples": Case(inf_in_samples, ["s.h5", "'/X'", "1 infinite", "sample 5, timestep 0"]),
    "NaN in series": Case(nan_in_series, ["d.h5", "'b'", "2 NaN", "station 'S003', time index 17"]),
    "NaN in forecast input": Case(nan_in_forecast_input, ["in.h5", "'c'", "1 NaN", "station 'S001', time index 5"]),
    "stateful remainder": Case(
        stateful_remainder,
        ["s.h5", "'X'", "10 training samples", "batch_size 4", "2 left over", "training.remainder to 'drop'", "for example 1, 2, 5, 10"],
    ),
    "stateful remainder with validation": Case(
        stateful_remainder_with_validation,
        ["15 training samples (20 minus 5 held out by validation_split 0.25)", "5 validation samples", "batch_size 4", "divisor of 15 and 5"],
    ),
    "stateful series remainder": Case(stateful_series_remainder, ["d.h5", "'a'", "10 training locations", "2 left over", "'drop'"]),
    "stateful series leftover steps": Case(
        stateful_series_leftover_steps, ["d.h5", "48 steps", "shapes.timesteps 10", "8 step(s) left over", "'drop'"], absent=["0 left over"]
    ),
    "static feature NaN": Case(static_nan_with_fill, ["d.h5", "'/elev'", "1 missing or invalid", "location 'S002'", "static features"]),
    "forecast feature names": Case(forecast_feature_names, ["data.features[2]", "'c'", "got 'x'"], absent=["never_read.h5: input file not found"]),
    "forecast architecture": Case(forecast_architecture, ["tampered.weights.h5", "do not fit the recorded architecture", "LSTM(3)", "(3, 12)", "(3, 16)"]),
    "forecast weights changed": Case(forecast_weights_changed, ["changed.weights.h5", "do not match the SHA-256", "train the model again"]),
    "forecast of unnamed samples": Case(forecast_of_unnamed_samples, ["job0.json", "data.features", "names no features"]),
    "forecast model missing": Case(forecast_model_missing, ["absent.weights.h5", "model file not found", "rnnjobs run"]),
    "forecast model not rnnjobs": Case(forecast_model_not_rnnjobs, ["other.weights.h5", "not an rnnjobs model file"]),
    "spinup too long": Case(spinup_too_long, ["spinup", "20 steps", "20 input steps"]),
    "output folder is a file": Case(output_folder_is_file, ["output.model_file", "blocker", "is a file"]),
    "valid_range typo": Case(valid_range_typo, ["data.valid_range.Y", "did you mean 'y'"]),
}


def run_command(jobs, tmp_path, command):
    paths = [write_job(tmp_path / f"job{index}.json", job) for index, job in enumerate(jobs)]
    return CliRunner().invoke(main, [command, *paths])


def command_for(jobs):
    kinds = {job["kind"] for job in jobs}
    return kinds.pop() if len(kinds) == 1 else "run"


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_rejected(name, command, tmp_path, model_file):
    case = CASES[name]
    jobs = case.build(tmp_path, model_file)
    if command == "run":
        command = command_for(jobs)

    result = run_command(jobs, tmp_path, command)

    assert result.exit_code == case.exit_code, result.output
    for word in case.words:
        assert word in result.output
    for word in case.absent:
        assert word not in result.output
    # Valid jobs of the same run still run, so only the rejected ones must leave no output.
    ran = {line.split()[0] for line in result.output.splitlines() if line.split()[1:2] == ["ok"]}
    for index, job in enumerate(jobs):
        if job.get("name", f"job{index}") not in ran:
            assert not os.path.exists(output_of(job))
    leftovers = [name for _, _, files in os.walk(tmp_path) for name in files if "rnnjobs-tmp" in name]
    assert leftovers == []


# Inputs that are unusual but valid: validate accepts them and reports what the run will do.


def test_declared_axis_order_accepted(tmp_path):
    job = series_job(write_column_major_series(tmp_path / "d.h5"), tmp_path)
    job["data"]["axis_order"] = "time,location"

    result = run_command([job], tmp_path, "validate")

    assert result.exit_code == 0, result.output
    assert "valid train job" in result.output


def test_declared_samples_axis_order_trains_same(tmp_path):
    x, y = samples()
    row_major = samples_job(write_samples_file(tmp_path / "c.h5", x, y), tmp_path, features=["a", "b", "c"])
    column_major = samples_job(write_samples_file(tmp_path / "f.h5", x.T, y.T), tmp_path, features=["a", "b", "c"])
    column_major["data"]["axis_order"] = "features,timesteps,samples"
    column_major["output"]["model_file"] = str(tmp_path / "out" / "f.weights.h5")

    result = run_command([column_major], tmp_path, "validate")
    expected = train_job(normalize_job(row_major))
    got = train_job(normalize_job(column_major))

    assert result.exit_code == 0, result.output
    assert got["weights_sha256"] == expected["weights_sha256"]


def test_fill_policy_accepts_nan_features(tmp_path):
    jobs = nan_in_series(tmp_path, None)
    jobs[0]["data"]["missing_features"] = "ffill"

    result = run_command(jobs, tmp_path, "validate")

    assert result.exit_code == 0, result.output
    assert "2 feature value(s) (2 NaN) will be filled with data.missing_features 'ffill'" in result.output


def test_int16_and_nan_targets_reported(tmp_path):
    x, y = samples()
    y[3, 0] = np.nan
    path = write_samples_file(tmp_path / "s.h5", (x * 100).astype(np.int16), y)

    result = run_command([samples_job(path, tmp_path)], tmp_path, "validate")

    assert result.exit_code == 0, result.output
    assert "dataset '/X': int16 values will be cast to float32" in result.output
    assert "dataset '/y': 1 of 10 target value(s) (1 NaN) will be masked in the loss" in result.output


def test_stateful_drop_reported(tmp_path):
    jobs = stateful_remainder(tmp_path, None)
    jobs[0]["training"]["remainder"] = "drop"

    result = run_command(jobs, tmp_path, "validate")

    assert result.exit_code == 0, result.output
    assert "training data: left out to fill whole stateful batches: 2 windows" in result.output


def test_forecast_after_train_in_one_run_validates(tmp_path):
    data_file = write_series_file(tmp_path / "d.h5")
    train = series_job(data_file, tmp_path)
    forecast = forecast_job(data_file, train["output"]["model_file"], tmp_path)

    result = run_command([train, forecast], tmp_path, "validate")

    assert result.exit_code == 0, result.output
    assert result.output.count("valid") == 2


def test_validate_reports_every_file(tmp_path):
    good = series_job(write_series_file(tmp_path / "d.h5"), tmp_path)
    bad_schema = schema_error(tmp_path, None)[0]
    bad_schema["output"]["model_file"] = str(tmp_path / "other.weights.h5")
    bad_data = missing_dataset(tmp_path, None)[0]
    bad_data["output"]["model_file"] = str(tmp_path / "third.weights.h5")

    result = run_command([good, bad_schema, bad_data], tmp_path, "validate")

    assert result.exit_code == 2
    assert "job0.json: valid train job" in result.output
    assert "job1.json" in result.output
    assert "units: must be a positive integer" in result.output
    assert "job2.json: job 'job2': data check failed" in result.output
    assert "2 invalid job(s) in 3 job file(s)" in result.output


# Problems found while a job runs: exit status 1, no output.


def test_nan_loss_fails_without_model_file(tmp_path):
    x, y = samples()
    # Finite in float32, but the squared error overflows to infinity in the first batch.
    y = np.full_like(y, 1e30)
    job = samples_job(write_samples_file(tmp_path / "s.h5", x, y), tmp_path)
    job["scaling"] = {"features": "none", "targets": "none"}

    result = run_command([job], tmp_path, "train")

    assert result.exit_code == 1, result.output
    # Several steps run per call into TensorFlow, so the first loss seen may already be NaN.
    assert re.search(r"training loss became (inf|nan)", result.output)
    assert "no model file was written" in result.output
    assert not os.path.exists(output_of(job))
    assert [name for _, _, files in os.walk(tmp_path) for name in files if "rnnjobs-tmp" in name] == []


def test_dtypes_cast_once_and_logged(tmp_path, caplog):
    x, y = samples()
    path = write_samples_file(tmp_path / "s.h5", x.astype(np.float64), (y * 100).astype(np.int64))
    job = normalize_job(samples_job(path, tmp_path))

    with caplog.at_level("INFO", logger="rnnjobs"):
        train_job(job)

    casts = [record.getMessage() for record in caplog.records if "to float32" in record.getMessage()]
    assert casts == [f"{path}: cast dataset /X from float64 to float32", f"{path}: cast dataset /y from int64 to float32"]


def test_nan_targets_masked_and_recorded(tmp_path, caplog):
    x, y = samples()
    y[[1, 6], 0] = np.nan
    job = normalize_job(samples_job(write_samples_file(tmp_path / "s.h5", x, y), tmp_path))

    with caplog.at_level("INFO", logger="rnnjobs"):
        result = train_job(job)

    metadata = read_model_metadata(result["output"])
    assert metadata["data"]["masked_targets"] == 2
    assert np.isfinite(metadata["history"]["loss"]).all()
    assert any("2 of 10 target value(s)" in record.getMessage() for record in caplog.records)


def test_stateful_drop_recorded_in_model_file(tmp_path):
    jobs = stateful_remainder(tmp_path, None)
    jobs[0]["training"]["remainder"] = "drop"

    result = train_job(normalize_job(jobs[0]))

    metadata = read_model_metadata(result["output"])
    assert metadata["data"]["left_out"] == {"training": {"windows": 2}}


# HDF5 file locking and read-only inputs.


@pytest.fixture
def file_locking(monkeypatch):
    monkeypatch.delenv("HDF5_USE_FILE_LOCKING", raising=False)


def test_locked_input_names_workaround(tmp_path, file_locking):
    job = series_job(write_series_file(tmp_path / "d.h5"), tmp_path)
    writer = hold_open(job["data"]["file"], "a")
    try:
        validated = run_command([job], tmp_path, "validate")
        trained = run_command([job], tmp_path, "train")
    finally:
        writer.kill()
        writer.wait()

    for result in (validated, trained):
        assert result.exit_code == 2, result.output
        assert "d.h5" in result.output
        assert "lock" in result.output
        assert "HDF5_USE_FILE_LOCKING=FALSE" in result.output
    assert not os.path.exists(output_of(job))


def test_inputs_opened_read_only(tmp_path, file_locking, model_file):
    # A reader holds a shared lock, so opening the input for writing would fail here.
    data_file = write_series_file(tmp_path / "d.h5")
    jobs = [series_job(data_file, tmp_path), forecast_job(data_file, model_file, tmp_path)]
    readers = [hold_open(data_file, "r"), hold_open(model_file, "r")]
    try:
        result = run_command(jobs, tmp_path, "validate")
    finally:
        for reader in readers:
            reader.kill()
            reader.wait()

    assert result.exit_code == 0, result.output


# Fast commands: no TensorFlow for --help, validate and schema.


@pytest.mark.parametrize("arguments", [["--help"], ["schema"], ["validate", "JOBS"]], ids=["help", "schema", "validate"])
def test_fast_commands_skip_tensorflow(arguments, tmp_path, model_file):
    data_file = write_series_file(tmp_path / "d.h5")
    jobs = [
        write_job(tmp_path / "train.json", series_job(data_file, tmp_path)),
        write_job(tmp_path / "forecast.json", forecast_job(data_file, model_file, tmp_path)),
    ]
    arguments = [argument for name in arguments for argument in (jobs if name == "JOBS" else [name])]
    code = (
        "import sys\n"
        "from rnnjobs.cli import main\n"
        "try:\n"
        f"    main({arguments!r}, prog_name='rnnjobs')\n"
        "except SystemExit as exit:\n"
        "    status = exit.code\n"
        "heavy = sorted(name for name in ('tensorflow', 'keras') if name in sys.modules)\n"
        "print('STATUS', status, 'HEAVY', heavy)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
    )

    assert "STATUS 0 HEAVY []" in result.stdout, result.stdout + result.stderr


def test_schema_command_prints_published_schema():
    result = CliRunner().invoke(main, ["schema"])

    with open(os.path.join(REPO, "job.schema.json"), encoding="utf-8") as stream:
        published = json.load(stream)
    assert result.exit_code == 0
    assert json.loads(result.output) == published


def test_expected_weight_shapes_match_keras():
    from rnnjobs import models
    from rnnjobs.validation import expected_weight_shapes

    architecture = {
        "hidden_layers": [
            {"type": "LSTM", "units": 5},
            {"type": "GRU", "units": 4},
            {"type": "Dropout", "rate": 0.1},
            {"type": "SimpleRNN", "units": 3},
            {"type": "Dense", "units": 2},
        ],
        "output_activation": "linear",
        "n_features": 3,
        "n_targets": 2,
        "return_sequences": True,
    }

    model = models.build_training_model(architecture, 4, 6)

    assert expected_weight_shapes(architecture) == [shape for _, shape in models.weight_layout(model)]


def test_forecast_units_mismatch_warned(tmp_path, model_file):
    path = write_series_file(tmp_path / "in.h5")
    with h5py.File(path, "a") as h5file:
        h5file["a"].attrs["units"] = "m s-1"
    job = forecast_job(path, model_file, tmp_path)

    result = run_command([job], tmp_path, "validate")

    assert result.exit_code == 0, result.output
    assert "warning: dataset 'a' has units 'm s-1', but the model was trained on '1'" in result.output
