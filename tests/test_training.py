"""Training jobs on small real HDF5 files: determinism, masking and the model file."""

import numpy as np
import pytest

from conftest import train_job_dict
from rnnjobs.modelfile import read_model_metadata
from rnnjobs.spec import normalize_job
from rnnjobs.training import train_job


def run_training(series_file, tmp_path, name, **overrides):
    job = normalize_job(train_job_dict(series_file, tmp_path / f"{name}.weights.h5", **overrides))
    return train_job(job)


def test_same_seed_gives_same_weights_hash(series_file, tmp_path):
    first = run_training(series_file, tmp_path, "first")
    second = run_training(series_file, tmp_path, "second")

    assert first["weights_sha256"] == second["weights_sha256"]


def test_other_seed_gives_other_weights_hash(series_file, tmp_path):
    first = run_training(series_file, tmp_path, "first")
    other = run_training(series_file, tmp_path, "other", training={"epochs": 2, "seed": 2, "learning_rate": 0.01})

    assert first["weights_sha256"] != other["weights_sha256"]


def test_model_file_records_rebuild_metadata(series_file, tmp_path):
    result = run_training(series_file, tmp_path, "meta")

    metadata = read_model_metadata(result["output"])

    assert metadata["feature_names"] == ["a", "b", "c"]
    assert metadata["target_names"] == ["y"]
    assert metadata["weights_sha256"] == result["weights_sha256"]
    assert metadata["architecture"]["hidden_layers"][0] == {"type": "LSTM", "units": 6}
    assert len(metadata["history"]["loss"]) == 2
    assert set(metadata["scalers"]) == {"features", "targets"}
    assert metadata["provenance"]["versions"]["keras"].startswith("3.")
    assert len(metadata["provenance"]["job_file_sha256"] or "") in (0, 64)


@pytest.mark.parametrize("layer_type", ["SimpleRNN", "GRU"])
def test_stateful_training_writes_model(series_file, tmp_path, layer_type):
    result = run_training(
        series_file, tmp_path, f"stateful_{layer_type}",
        model={"hidden_layers": [{"type": layer_type, "units": 5}]},
        shapes={"batch_size": 4, "timesteps": 10, "stateful": True},
    )

    metadata = read_model_metadata(result["output"])

    assert metadata["shapes"]["stateful"] is True
    assert np.isfinite(metadata["history"]["loss"]).all()


def test_validation_and_early_stopping(series_file, tmp_path):
    result = run_training(
        series_file, tmp_path, "early",
        training={"epochs": 3, "seed": 1, "validation_split": 0.25, "early_stopping": {"patience": 1}},
    )

    history = read_model_metadata(result["output"])["history"]

    assert "val_loss" in history
    assert 1 <= len(history["loss"]) <= 3


def test_static_features_repeat_along_time(tmp_path):
    import h5py

    from conftest import write_series_file
    from rnnjobs.data import read_series

    path = write_series_file(tmp_path / "static.h5", n_locations=5, n_times=12)
    with h5py.File(path, "a") as h5file:
        h5file["elev"] = np.arange(5, dtype=np.float64) * 100.0
    spec = normalize_job(train_job_dict(path, tmp_path / "m.weights.h5"))["data"]

    data = read_series(dict(spec, locations=[3, 1]), ["a"], ["y"], static_names=["elev"])

    assert data.feature_names == ["a", "elev"]
    assert data.features.shape == (2, 12, 2)
    assert np.array_equal(data.features[:, :, 1], np.array([[300.0] * 12, [100.0] * 12], np.float32))


def test_early_stopping_records_kept_epoch(series_file, tmp_path):
    result = run_training(
        series_file, tmp_path, "kept",
        training={"epochs": 4, "seed": 1, "learning_rate": 0.01, "validation_split": 0.25, "early_stopping": {"patience": 1}},
    )

    metadata = read_model_metadata(result["output"])
    best = int(np.argmin(metadata["history"]["val_loss"])) + 1

    assert metadata["kept_epoch"] == best
    assert result["kept_epoch"] == best
    assert result["loss"] == metadata["history"]["loss"][best - 1]
