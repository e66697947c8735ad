"""Sweeps: one job file expanded into several jobs with distinct names and outputs."""

import os

import pytest
from click.testing import CliRunner

from conftest import forecast_job_dict, train_job_dict, write_job
from rnnjobs.cli import main
from rnnjobs.spec import JobError, load_job, load_jobs, normalize_job
from rnnjobs.sweep import MAX_SWEEP_JOBS, SweepError, expand_sweep, format_value


def sweep_job(series_file, tmp_path, sweep, **overrides):
    job = train_job_dict(series_file, "out/fmc.weights.h5", name="fmc", **overrides)
    job["sweep"] = sweep
    return job


def test_product_of_fields_and_seeds(series_file, tmp_path):
    sweep = {
        "fields": {"training.learning_rate": [0.01, 0.001], "model.hidden_layers[0].units": [8, 16]},
        "labels": {"training.learning_rate": "lr"},
        "seeds": [1, 2],
    }
    path = write_job(tmp_path / "fmc.json", sweep_job(series_file, tmp_path, sweep))

    jobs = load_jobs([path])

    assert [job["name"] for job in jobs] == [
        "fmc_lr0.01_units8_seed1", "fmc_lr0.01_units8_seed2", "fmc_lr0.01_units16_seed1", "fmc_lr0.01_units16_seed2",
        "fmc_lr0.001_units8_seed1", "fmc_lr0.001_units8_seed2", "fmc_lr0.001_units16_seed1", "fmc_lr0.001_units16_seed2",
    ]
    assert jobs[5]["output"]["model_file"] == os.path.join(str(tmp_path), "out", "fmc_lr0.001_units8_seed2.weights.h5")
    assert jobs[5]["training"]["learning_rate"] == 0.001
    assert jobs[5]["model"]["hidden_layers"][0]["units"] == 8
    assert jobs[5]["training"]["seed"] == 2
    assert jobs[5]["training"]["epochs"] == 2
    assert len({job["spec_sha256"] for job in jobs}) == 8
    assert all("sweep" not in job for job in jobs)
    assert all(len(job["job_file_sha256"]) == 64 for job in jobs)


def test_missing_section_is_created(series_file, tmp_path):
    raw = sweep_job(series_file, tmp_path, {"fields": {"scaling.targets": ["none", "minmax"]}})

    jobs = expand_sweep(raw, "fmc")

    assert [job["scaling"]["targets"] for job in jobs] == ["none", "minmax"]
    assert [job["name"] for job in jobs] == ["fmc_targetsnone", "fmc_targetsminmax"]


def test_forecast_sweep_suffixes_output(series_file, tmp_path):
    raw = forecast_job_dict(series_file, "a.weights.h5", "out/fc.nc", name="fc")
    raw["sweep"] = {"fields": {"model_file": ["a.weights.h5", "b.weights.h5"]}, "labels": {"model_file": "m"}}
    path = write_job(tmp_path / "fc.json", raw)

    jobs = load_jobs([path])

    assert [os.path.basename(job["output"]["file"]) for job in jobs] == ["fc_ma.nc", "fc_mb.nc"]
    assert [os.path.basename(job["model_file"]) for job in jobs] == ["a.weights.h5", "b.weights.h5"]


@pytest.mark.parametrize(
    "value,position,expected",
    [(0.01, 0, "0.01"), (1e-05, 0, "1e-05"), (16, 0, "16"), (True, 0, "true"), ("a b&c", 0, "a-b-c"),
     ("../out/m_seed1.weights.h5", 0, "m_seed1"), ("***", 2, "2"), ({"type": "GRU", "units": 4}, 1, "1")],
)
def test_value_formats_safe_for_files(value, position, expected):
    assert format_value(value, position) == expected


INVALID_SWEEPS = [
    ("output field", {"fields": {"output.model_file": ["a.weights.h5"]}}, "sweep.fields.output.model_file: a sweep cannot set 'output'"),
    ("index past end", {"fields": {"model.hidden_layers[5].units": [8]}}, "model.hidden_layers has 2 items, so [5] does not exist"),
    ("index into object", {"fields": {"training[0]": [8]}}, "sweep.fields.training[0]: training is not a list"),
    ("seeds twice", {"fields": {"training.seed": [1]}, "seeds": [2]}, "give seeds either here or in sweep.fields.training.seed"),
    ("label clash", {"fields": {"model.hidden_layers[0].units": [4], "model.hidden_layers[1].units": [5]}}, "would all be labelled 'units'"),
    ("unknown label", {"fields": {"training.epochs": [1]}, "labels": {"training.epoch": "e"}}, "sweep.labels.training.epoch: no such field"),
]


@pytest.mark.parametrize("label,sweep,message", INVALID_SWEEPS, ids=[case[0] for case in INVALID_SWEEPS])
def test_invalid_sweep_names_field(series_file, tmp_path, label, sweep, message):
    path = write_job(tmp_path / "bad.json", sweep_job(series_file, tmp_path, sweep))

    with pytest.raises(JobError) as caught:
        load_jobs([path])

    assert "bad.json" in str(caught.value)
    assert message in str(caught.value)


def test_colliding_names_rejected(series_file, tmp_path):
    raw = sweep_job(series_file, tmp_path, {"fields": {"training.optimizer": ["adam", "adam"]}})

    with pytest.raises(SweepError, match="both give the job name 'fmc_optimizeradam'"):
        expand_sweep(raw, "fmc")


def test_seeds_rejected_for_forecast(series_file, tmp_path):
    raw = forecast_job_dict(series_file, "a.weights.h5", "fc.nc")
    raw["sweep"] = {"seeds": [1, 2]}
    path = write_job(tmp_path / "fc.json", raw)

    with pytest.raises(JobError, match="sweep.seeds: only train jobs have a seed"):
        load_jobs([path])


def test_too_many_jobs_rejected(series_file, tmp_path):
    values = list(range(1, 201))
    raw = sweep_job(series_file, tmp_path, {"fields": {"training.epochs": values, "shapes.timesteps": values}})

    with pytest.raises(SweepError, match=f"expands into 40000 jobs, more than the {MAX_SWEEP_JOBS} allowed"):
        expand_sweep(raw, "fmc")


@pytest.mark.parametrize(
    "sweep,field",
    [({}, "sweep"), ({"seeds": []}, "sweep.seeds"), ({"fields": {"bad path!": [1]}}, "sweep.fields"), ({"seed": [1]}, "sweep")],
)
def test_sweep_schema_errors(series_file, tmp_path, sweep, field):
    path = write_job(tmp_path / "bad.json", sweep_job(series_file, tmp_path, sweep))

    with pytest.raises(JobError) as caught:
        load_jobs([path])

    assert any(problem.startswith(field) for problem in caught.value.problems), caught.value.problems


def test_expanded_job_error_names_job(series_file, tmp_path):
    path = write_job(tmp_path / "bad.json", sweep_job(series_file, tmp_path, {"fields": {"training.learning_rate": [0.01, -1]}}))

    with pytest.raises(JobError) as caught:
        load_jobs([path])

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("sweep job 'fmc_learning_rate-1': training.learning_rate")


def test_single_job_loaders_reject_sweep(series_file, tmp_path):
    raw = sweep_job(series_file, tmp_path, {"seeds": [1, 2]})
    path = write_job(tmp_path / "fmc.json", raw)

    with pytest.raises(JobError, match="load its file with load_jobs"):
        load_job(path)
    with pytest.raises(JobError, match="load its file with load_jobs"):
        normalize_job(raw)


def test_two_sweeps_writing_one_output_rejected(series_file, tmp_path):
    first = write_job(tmp_path / "one.json", sweep_job(series_file, tmp_path, {"seeds": [1, 2]}))
    second = write_job(tmp_path / "two.json", sweep_job(series_file, tmp_path, {"seeds": [2, 3]}))

    with pytest.raises(JobError, match="fmc_seed2.weights.h5 is also written by"):
        load_jobs([first, second])


def test_validate_lists_expanded_jobs(series_file, tmp_path):
    path = write_job(tmp_path / "fmc.json", sweep_job(series_file, tmp_path, {"seeds": [3, 4]}))

    result = CliRunner().invoke(main, ["validate", path])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert "valid train job 'fmc_seed3' -> " in lines[0]
    assert lines[0].endswith(os.path.join("out", "fmc_seed3.weights.h5"))
    assert lines[1].endswith(os.path.join("out", "fmc_seed4.weights.h5"))
