"""Job files: schema and semantic problems, each reported with its field path, all at once."""

import json
import os

import jsonschema
import pytest

from conftest import REPO, forecast_job_dict, train_job_dict, write_job
from rnnjobs.spec import JOB_SCHEMA, JobError, load_job, load_jobs, normalize_job, spec_hash, suggest_model_file_name


def problems_of(job):
    with pytest.raises(JobError) as caught:
        normalize_job(job, source="job.json", folder="/data")
    return caught.value.problems


def train(**overrides):
    return train_job_dict("d.h5", "m.weights.h5", **overrides)


def layers(*specs):
    return {"hidden_layers": list(specs)}


# Each row: a job, and one problem it must produce, exactly.
PROBLEMS = {
    "zero units": (
        train(model=layers({"type": "LSTM", "units": 4}, {"type": "GRU", "units": 2}, {"type": "Dense", "units": 0})),
        "model.hidden_layers[2].units: must be a positive integer, got 0",
    ),
    "string for integer": (
        train(shapes={"batch_size": "four", "timesteps": 10}),
        "shapes.batch_size: must be a positive integer, got 'four'",
    ),
    "boolean field": (
        train(shapes={"batch_size": 4, "timesteps": 10, "stateful": "yes"}),
        "shapes.stateful: must be true or false, got 'yes'",
    ),
    "fraction out of range": (
        train(training={"validation_split": 1.0}),
        "training.validation_split: must be a number in [0, 1), got 1.0",
    ),
    "learning rate zero": (
        train(training={"learning_rate": 0}),
        "training.learning_rate: must be a number greater than 0, got 0",
    ),
    "unknown layer type": (
        train(model=layers({"type": "Transfomer", "units": 4})),
        "model.hidden_layers[0].type: got 'Transfomer', expected one of 'SimpleRNN', 'LSTM', 'GRU', 'Dense', 'Dropout'",
    ),
    "misspelt field": (
        train(training={"learning_rte": 0.1}),
        "training.learning_rte: unknown field (did you mean 'learning_rate'?); allowed fields: early_stopping, "
        "epochs, jit_compile, learning_rate, loss, optimizer, remainder, seed, validation_split",
    ),
    "field of another layer type": (
        train(model=layers({"type": "Dense", "units": 4, "recurrent_dropout": 0.1})),
        "model.hidden_layers[0].recurrent_dropout: unknown field; allowed fields: activation, type, units",
    ),
    "missing field": (
        train(model=layers({"type": "LSTM"})),
        "model.hidden_layers[0].units: required field is missing",
    ),
    "missing section": (
        {key: value for key, value in train().items() if key != "shapes"},
        "shapes: required field is missing",
    ),
    "misspelt layout": (
        train(data={"file": "d.h5", "layout": "sample", "x": "X"}),
        "data.layout: got 'sample', expected one of 'series', 'samples' (did you mean 'samples'?)",
    ),
    "series field in samples layout": (
        train(data={"file": "d.h5", "layout": "samples", "x": "X", "locations": [1]}),
        "data.locations: unknown field; allowed fields: axis_order, features, file, layout, missing_features, "
        "targets, valid_range, x, y",
    ),
    "empty location list": (
        train(data={"file": "d.h5", "features": ["a"], "targets": ["y"], "locations": []}),
        "data.locations: must have at least 1 item(s), got 0",
    ),
    "unknown location range key": (
        train(data={"file": "d.h5", "features": ["a"], "targets": ["y"], "locations": {"start": 0, "end": 4}}),
        "data.locations.end: unknown field; allowed fields: start, step, stop",
    ),
    "unknown kind": ({"kind": "predict"}, "kind: got 'predict', expected one of 'train', 'forecast'"),
    "samples forecast": (
        forecast_job_dict("d.h5", "m.weights.h5", "f.nc", data={"file": "d.h5", "layout": "samples"}),
        "data.layout: must be 'series', got 'samples'",
    ),
    "model file .h5": (
        train(output={"model_file": "out/site01.h5"}),
        "output.model_file: Keras 3 saves weights only to names ending in '.weights.h5', got 'site01.h5'; "
        "use 'site01.weights.h5'",
    ),
    "series without targets": (
        train(data={"file": "d.h5", "features": ["a"]}),
        "data.targets: required for a train job in the series layout: name at least one target dataset",
    ),
    "return_sequences false without RNN": (
        train(model=layers({"type": "Dense", "units": 4}), shapes={"batch_size": 4, "timesteps": 10, "return_sequences": False}),
        "shapes.return_sequences: false needs a recurrent layer (SimpleRNN, LSTM or GRU) in model.hidden_layers, "
        "whose last step is the output; add one or set return_sequences to true",
    ),
    "stride with stateful": (
        train(shapes={"batch_size": 4, "timesteps": 10, "stateful": True, "stride": 5}),
        "shapes.stride: 5 applies to stateless training only; stateful batches continue each series without "
        "overlap, so remove stride or set shapes.stateful to false",
    ),
    "pad with stateful": (
        train(shapes={"batch_size": 4, "timesteps": 10, "stateful": True}, training={"remainder": "pad"}),
        "training.remainder: 'pad' is not supported for stateful training; use 'error' or 'drop'",
    ),
    "timesteps beyond time range": (
        train(data={"file": "d.h5", "features": ["a"], "targets": ["y"], "time": {"stop": 8}}),
        "shapes.timesteps: 10 is longer than the 8 steps that data.time selects",
    ),
    "empty time range": (
        train(data={"file": "d.h5", "features": ["a"], "targets": ["y"], "time": {"start": 30, "stop": 20}}),
        "data.time: stop 20 must be greater than start 30",
    ),
    "valid_range reversed": (
        train(data={"file": "d.h5", "features": ["a"], "targets": ["y"], "valid_range": {"y": [5, 1]}}),
        "data.valid_range.y: min 5 is greater than max 1",
    ),
    "valid_range typo": (
        train(data={"file": "d.h5", "features": ["a"], "targets": ["fm"], "valid_range": {"FM": [0, 60]}}),
        "data.valid_range.FM: not a feature or target of this job (did you mean 'fm'?); expected one of 'a', 'fm'",
    ),
    "output overwrites input": (
        train(output={"model_file": "d.weights.h5"}, data={"file": "d.weights.h5", "features": ["a"], "targets": ["y"]}),
        "output.model_file: is the input file data.file; inputs are never written, choose another output file",
    ),
    "forecast targets": (
        forecast_job_dict("d.h5", "m.weights.h5", "f.nc", data={"file": "d.h5", "targets": ["y"]}),
        "data.targets: a forecast job takes no targets; the model file names them",
    ),
    "spinup beyond time range": (
        forecast_job_dict("d.h5", "m.weights.h5", "f.nc", data={"file": "d.h5", "time": {"start": 10, "stop": 20}}, spinup=10),
        "spinup: 10 steps leave nothing of the 10 steps that data.time selects",
    ),
    "forecast overwrites model": (
        forecast_job_dict("d.h5", "m.weights.h5", "m.weights.h5"),
        "output.file: is the model file the job reads; choose another output file",
    ),
}


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_problem_reported_with_field_path(name):
    job, expected = PROBLEMS[name]

    problems = problems_of(job)

    assert expected in problems


def test_all_problems_of_a_file_at_once():
    job = train(
        model=layers({"type": "LSTM", "units": 0}, {"type": "Transformer"}),
        shapes={"batch_size": 0, "timesteps": 10},
        output={"model_file": "out/site01.hdf5"},
    )

    problems = problems_of(job)

    assert [problem.split(":")[0] for problem in problems] == [
        "model.hidden_layers[0].units",
        "model.hidden_layers[1].type",
        "shapes.batch_size",
        "output.model_file",
    ]


def test_problems_sorted_by_list_index():
    hidden = [{"type": "LSTM", "units": 4} for _ in range(11)]
    hidden[10]["units"] = 0
    hidden[2]["units"] = 0

    problems = problems_of(train(model={"hidden_layers": hidden}))

    assert [problem.split(":")[0] for problem in problems] == ["model.hidden_layers[2].units", "model.hidden_layers[10].units"]


@pytest.mark.parametrize(
    "name,expected",
    [
        ("out/site01.h5", "out/site01.weights.h5"),
        ("out/site01.hdf5", "out/site01.weights.h5"),
        ("out/site01", "out/site01.weights.h5"),
        ("out/site01.keras", "out/site01.weights.h5"),
        ("out/site01.weights", "out/site01.weights.h5"),
    ],
)
def test_model_file_name_suggestion(name, expected):
    assert suggest_model_file_name(name) == expected


def test_load_job_file_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"kind": "train",\n "data": }')

    with pytest.raises(JobError) as missing:
        load_job(tmp_path / "absent.json")
    with pytest.raises(JobError) as invalid_json:
        load_job(broken)

    assert "absent.json" in str(missing.value)
    assert "(file): not found" in missing.value.problems
    assert "broken.json" in str(invalid_json.value)
    assert "invalid JSON at line 2, column 10" in invalid_json.value.problems[0]


def test_job_file_given_twice_rejected(tmp_path):
    path = write_job(tmp_path / "job.json", train_job_dict(tmp_path / "d.h5", tmp_path / "m.weights.h5"))

    with pytest.raises(JobError) as caught:
        load_jobs([path, path])

    assert "output.model_file: the job file is given twice" in str(caught.value)


def test_editor_schema_key_accepted_and_ignored():
    plain = normalize_job(train())
    with_key = normalize_job({"$schema": "../job.schema.json", **train()})

    assert "$schema" not in with_key
    assert spec_hash(with_key) == spec_hash(plain)


def test_published_schema_is_valid_and_current():
    with open(os.path.join(REPO, "job.schema.json"), encoding="utf-8") as stream:
        published = json.load(stream)

    jsonschema.Draft202012Validator.check_schema(JOB_SCHEMA)
    assert published == JOB_SCHEMA


@pytest.mark.parametrize("name", ["fmc_train.json", "fmc_forecast.json"])
def test_example_jobs_valid(name):
    job = load_job(os.path.join(REPO, "jobs", name))

    assert job["kind"] in ("train", "forecast")


def test_repeated_feature_name_rejected():
    job = {
        "kind": "train",
        "data": {"file": "d.h5", "features": ["Ed", "Ed"], "targets": ["fm"]},
        "model": {"hidden_layers": [{"type": "LSTM", "units": 4}]},
        "shapes": {"batch_size": 4, "timesteps": 10},
        "output": {"model_file": "m.weights.h5"},
    }

    with pytest.raises(JobError) as caught:
        normalize_job(job)

    assert caught.value.problems == ["data.features: each name may appear once, got 'Ed' more than once"]
