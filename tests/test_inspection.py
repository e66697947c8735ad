"""Inspection of model and forecast files, read with h5py only."""

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, forecast_job_dict, train_job_dict, write_series_file
from rnnjobs.cli import main
from rnnjobs.forecasting import forecast_job
from rnnjobs.spec import normalize_job
from rnnjobs.training import train_job


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Return the paths of a tiny trained model file and a forecast made with it."""
    folder = tmp_path_factory.mktemp("inspection")
    series_file = write_series_file(folder / "series.h5")
    model_file, forecast_file = folder / "m.weights.h5", folder / "f.nc"
    layers = {"hidden_layers": [{"type": "GRU", "units": 5}, {"type": "Dropout", "rate": 0.1}, {"type": "Dense", "units": 3}]}
    train = train_job_dict(series_file, model_file, model=layers, training={"epochs": 2, "seed": 2, "validation_split": 0.25})
    train_job(normalize_job(train, str(folder / "train.json")))
    forecast_job(normalize_job(forecast_job_dict(series_file, model_file, forecast_file, spinup=5), str(folder / "forecast.json")))
    return str(model_file), str(forecast_file)


def stored_metadata(path):
    with h5py.File(path, "r") as h5file:
        attrs = h5file["rnnjobs"].attrs
        return {key: json.loads(value) for key, value in attrs.items() if key not in ("format", "format_version")}


def test_model_json_round_trips_metadata(trained):
    model_file, _ = trained

    result = CliRunner().invoke(main, ["inspect", "--json", model_file])

    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["kind"] == "model"
    assert info["metadata"] == stored_metadata(model_file)
    assert info["weights_sha256_check"] == "matches the weights in the file"
    assert [weight["name"] for weight in info["weights"]] == [name for name, _ in info["metadata"]["weight_layout"]]
    assert info["parameters"] == sum(int(np.prod(shape)) for _, shape in info["metadata"]["weight_layout"])


def test_model_text_names_contents(trained):
    model_file, _ = trained

    result = CliRunner().invoke(main, ["inspect", model_file])

    assert result.exit_code == 0, result.output
    assert "architecture: GRU(5) -> Dropout(0.1) -> Dense(3) -> Dense(1, linear) output" in result.output
    assert "features: a (1), b (1), c (1)" in result.output
    assert "targets: y (percent)" in result.output
    assert "training history: 2 epochs" in result.output
    assert "6 training and 2 validation stations" in result.output
    assert "(matches the weights in the file)" in result.output


def test_changed_weights_fail_hash_check(trained, tmp_path):
    changed = str(tmp_path / "changed.weights.h5")
    shutil.copy(trained[0], changed)
    with h5py.File(changed, "a") as h5file:
        h5file["layers/gru/cell/vars/0"][0, 0] += 1.0

    result = CliRunner().invoke(main, ["inspect", "--json", changed])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["weights_sha256_check"].startswith("DIFFERS")


def test_forecast_json_describes_file(trained):
    model_file, forecast_file = trained

    result = CliRunner().invoke(main, ["inspect", "--json", forecast_file])

    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["kind"] == "forecast"
    assert info["dimensions"] == {"station": 8, "time": 55}
    assert info["variables"]["y"]["dimensions"] == ["station", "time"]
    assert info["variables"]["y"]["summary"]["non_finite"] == 0
    assert info["coordinates"]["time"]["first_time"] == "2024-01-01 05:00"
    assert info["attributes"]["job"]["spinup"] == 5
    assert info["attributes"]["provenance"]["spec_sha256"] == info["attributes"]["spec_sha256"]
    assert info["model"]["weights_sha256"] == stored_metadata(model_file)["weights_sha256"]
    assert info["model"]["check"] == "found, weights sha256 matches"


def test_forecast_text_names_contents(trained):
    result = CliRunner().invoke(main, ["inspect", trained[1]])

    assert result.exit_code == 0, result.output
    assert "dimensions: station 8, time 55" in result.output
    assert "y (station, time) float32 [percent]: min" in result.output
    assert "time: 55 values, 473357 to 473411 (2024-01-01 05:00 to 2024-01-03 11:00" in result.output
    assert "found, weights sha256 matches" in result.output


def test_forecast_with_missing_model_file(trained, tmp_path):
    forecast_copy = str(tmp_path / "copy.nc")
    shutil.copy(trained[1], forecast_copy)
    with h5py.File(forecast_copy, "a") as h5file:
        h5file.attrs["model_file"] = str(tmp_path / "gone.weights.h5")

    result = CliRunner().invoke(main, ["inspect", forecast_copy])

    assert result.exit_code == 0, result.output
    assert "gone.weights.h5 (not found)" in result.output


def test_other_hdf5_file_exits_2(tmp_path, series_file):
    result = CliRunner().invoke(main, ["inspect", series_file])

    assert result.exit_code == 2
    assert "neither an rnnjobs model file" in result.output
    assert "datasets in the file: a, b, c" in result.output


def test_inspect_does_not_import_tensorflow(trained):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from rnnjobs.cli import main\n"
        f"for path in {list(trained)!r}:\n"
        "    result = CliRunner().invoke(main, ['inspect', '--json', path])\n"
        "    assert result.exit_code == 0, result.output\n"
        "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))\n"
    )

    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
