"""Parallel runs: equal weights for any -j, failure isolation, crashes, time limits and Dask."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import psutil
import pytest
from click.testing import CliRunner

from conftest import REPO, forecast_job_dict, train_job_dict, write_job
from rnnjobs import dask_pool, local_pool, parallel
from rnnjobs.cli import main
from rnnjobs.modelfile import read_model_metadata
from rnnjobs.spec import load_jobs, normalize_job

# A guard against a hang, far above the tens of seconds these runs take; not a speed check.
HANG_GUARD_SECONDS = 600

DROPOUT_MODEL = {
    "hidden_layers": [
        {"type": "LSTM", "units": 6, "dropout": 0.1, "recurrent_dropout": 0.2},
        {"type": "Dense", "units": 4, "activation": "relu"},
    ]
}


def write_train_jobs(folder, series_file, specs):
    """Write one train job file per ``(name, overrides)`` into ``folder``; return their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, overrides in specs:
        job = train_job_dict(series_file, os.path.join(folder, f"{name}.weights.h5"), name=name, **overrides)
        paths.append(write_job(os.path.join(folder, f"{name}.json"), job))
    return paths


def weights_hashes(folder, names):
    return {name: read_model_metadata(os.path.join(folder, f"{name}.weights.h5"))["weights_sha256"] for name in names}


def run_script(tmp_path, code, *args):
    """Run ``code`` as a script in a fresh Python and return what it prints as JSON."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True, text=True, env=env, timeout=HANG_GUARD_SECONDS, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_hashes_equal_for_j1_and_j2(tmp_path, series_file):
    # The same job twice, each beside another job, with and without recurrent dropout.
    specs = [
        ("plain_a", {}),
        ("plain_b", {}),
        ("dropout_a", {"model": DROPOUT_MODEL}),
        ("dropout_b", {"model": DROPOUT_MODEL}),
    ]
    names = [name for name, _ in specs]
    serial_paths = write_train_jobs(tmp_path / "serial", series_file, specs)
    parallel_paths = write_train_jobs(tmp_path / "parallel", series_file, specs)

    serial = CliRunner().invoke(main, ["train", "-j", "1", *serial_paths])
    results = parallel.run_jobs(load_jobs(parallel_paths), n_jobs=2)

    assert serial.exit_code == 0, serial.output
    assert [result["status"] for result in results] == ["ok"] * 4
    serial_hashes = weights_hashes(tmp_path / "serial", names)
    parallel_hashes = weights_hashes(tmp_path / "parallel", names)
    assert parallel_hashes == serial_hashes
    assert serial_hashes["plain_a"] == serial_hashes["plain_b"]
    assert serial_hashes["dropout_a"] == serial_hashes["dropout_b"]
    assert serial_hashes["plain_a"] != serial_hashes["dropout_a"]
    assert {result["pid"] for result in results}.isdisjoint({os.getpid()})
    assert len({result["pid"] for result in results}) <= 2
    assert {result["threads"] for result in results} == {parallel.default_threads(2)}
    assert all(result["warnings"] == [] for result in results)


def test_bad_data_rejects_only_its_job(tmp_path, series_file):
    bad_file = tmp_path / "bad.h5"
    with h5py.File(series_file, "r") as source, h5py.File(bad_file, "w") as target:
        for name in source:
            source.copy(name, target)
        values = target["a"][...]
        values[2, 5] = np.nan
        target["a"][...] = values
    paths = write_train_jobs(tmp_path, series_file, [("good_1", {}), ("good_2", {})])
    paths.insert(1, write_job(tmp_path / "bad.json", train_job_dict(bad_file, tmp_path / "bad.weights.h5", name="bad")))

    result = CliRunner().invoke(main, ["train", "-j", "2", *paths])

    # Invalid data is found before any job starts: that job is rejected with
    # status 2 for the run, and the valid jobs still run.
    assert result.exit_code == 2, result.output
    summary = {line.split()[0]: line for line in result.output.splitlines() if line.split()[:1] in (["good_1"], ["good_2"], ["bad"])}
    assert "invalid" in summary["bad"]
    assert "'a'" in summary["bad"]
    assert " ok " in summary["good_1"]
    assert " ok " in summary["good_2"]
    assert "1 of 3 job(s) failed, invalid or cancelled: bad" in result.output
    assert (tmp_path / "good_1.weights.h5").exists()
    assert (tmp_path / "good_2.weights.h5").exists()
    assert not (tmp_path / "bad.weights.h5").exists()


CRASHING_RUN = """
import json, os, sys
from rnnjobs.parallel import run_job, run_jobs
from rnnjobs.spec import load_jobs

def crash_worker(job, threads, log_level):
    if job["name"] == "crash":
        os._exit(3)
    return run_job(job, threads, log_level)

if __name__ == "__main__":
    results = run_jobs(load_jobs(sys.argv[1:]), n_jobs=2, worker=crash_worker)
    print(json.dumps({result["name"]: [result["status"], result.get("error")] for result in results}))
"""


def test_worker_crash_reported_as_failure(tmp_path, series_file):
    paths = write_train_jobs(tmp_path, series_file, [("first", {}), ("crash", {}), ("last", {})])

    outcome = run_script(tmp_path, CRASHING_RUN, *paths)

    assert outcome["crash"][0] == "failed"
    assert "WorkerCrashedError" in outcome["crash"][1]
    assert "EXIT(3)" in outcome["crash"][1]
    assert outcome["first"] == ["ok", None]
    assert outcome["last"] == ["ok", None]


HANGING_RUN = """
import json, os, sys, time
from rnnjobs.parallel import run_jobs
from rnnjobs.spec import load_jobs

def hang_worker(job, threads, log_level):
    if job["name"] == "hang":
        with open("hang.pid", "w") as stream:
            stream.write(str(os.getpid()))
        time.sleep(3600)
    return {"name": job["name"], "kind": job["kind"], "status": "ok", "output": None, "seconds": 0.0}

if __name__ == "__main__":
    results = run_jobs(load_jobs(sys.argv[2:]), n_jobs=2, timeout=float(sys.argv[1]), worker=hang_worker)
    print(json.dumps({result["name"]: [result["status"], result.get("error")] for result in results}))
"""


def test_timeout_stops_hung_job(tmp_path, series_file):
    paths = write_train_jobs(tmp_path, series_file, [("before", {}), ("hang", {}), ("after_1", {}), ("after_2", {})])

    outcome = run_script(tmp_path, HANGING_RUN, 15, *paths)

    assert outcome["hang"][0] == "failed"
    assert "TimeoutError" in outcome["hang"][1]
    assert outcome["before"] == ["ok", None]
    assert outcome["after_1"] == ["ok", None]
    assert outcome["after_2"] == ["ok", None]
    hung_pid = int((tmp_path / "hang.pid").read_text())
    assert not psutil.pid_exists(hung_pid) or psutil.Process(hung_pid).status() == psutil.STATUS_ZOMBIE


TENSORFLOW_PARENT_RUN = """
import json, os, sys
import tensorflow as tf

# Start TensorFlow's thread pools in the parent, as an interactive session or a
# notebook would, before any worker exists; a forked worker could hang on them.
tf.linalg.matmul(tf.ones((64, 64)), tf.ones((64, 64))).numpy()

from rnnjobs.parallel import run_jobs
from rnnjobs.spec import load_jobs

if __name__ == "__main__":
    results = run_jobs(load_jobs(sys.argv[1:]), n_jobs=2)
    print(json.dumps({"parent": os.getpid(), "results": results}))
"""


def test_jobs_finish_after_parent_used_tensorflow(tmp_path, series_file):
    paths = write_train_jobs(tmp_path, series_file, [(f"job_{i}", {}) for i in range(4)])

    outcome = run_script(tmp_path, TENSORFLOW_PARENT_RUN, *paths)

    assert [result["status"] for result in outcome["results"]] == ["ok"] * 4
    assert outcome["parent"] not in {result["pid"] for result in outcome["results"]}


def test_dask_cluster_gives_serial_hashes(tmp_path, series_file):
    distributed = pytest.importorskip("distributed")
    specs = [("plain", {}), ("dropout", {"model": DROPOUT_MODEL})]
    serial_paths = write_train_jobs(tmp_path / "serial", series_file, specs)
    dask_paths = write_train_jobs(tmp_path / "dask", series_file, specs)
    scheduler_file = tmp_path / "scheduler.json"

    serial = parallel.run_jobs(load_jobs(serial_paths), n_jobs=1)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        client.write_scheduler_file(str(scheduler_file))
        result = CliRunner().invoke(main, ["train", "--backend", "dask", "--scheduler-file", str(scheduler_file), *dask_paths])

    assert result.exit_code == 0, result.output
    assert [outcome["status"] for outcome in serial] == ["ok", "ok"]
    assert weights_hashes(tmp_path / "dask", ["plain", "dropout"]) == {outcome["name"]: outcome["weights_sha256"] for outcome in serial}


def fail_train_worker(job, threads, log_level):
    """Fail every train job without running it, and record the forecasts that reach the worker."""
    if job["kind"] == "train":
        return parallel.failure_result(job, "TrainingError: loss became nan", 0.1)
    raise AssertionError(f"forecast {job['name']} ran although its model was not written")


def test_forecast_skipped_when_training_failed(tmp_path, series_file):
    model_file = tmp_path / "m.weights.h5"
    train = normalize_job(train_job_dict(series_file, model_file, name="train_m"))
    forecast = normalize_job(forecast_job_dict(series_file, model_file, tmp_path / "f.nc", name="forecast_m"))
    seen = []

    results = parallel.run_jobs([forecast, train], n_jobs=1, worker=fail_train_worker, on_result=seen.append)

    assert [result["status"] for result in results] == ["failed", "failed"]
    assert "not run" in results[0]["error"]
    assert "'train_m'" in results[0]["error"]
    assert [result["name"] for result in seen] == ["train_m", "forecast_m"]


def test_workers_capped_at_cores(caplog):
    cores = parallel.available_cores()

    with caplog.at_level(logging.WARNING, logger="rnnjobs.parallel"):
        count = parallel.worker_count(cores + 3)
    pool = parallel.make_pool(cores + 3)
    pool.close()

    assert count == cores
    assert len(pool.lanes) == cores
    assert pool.threads == 1
    assert f"-j {cores + 3} is more than" in caplog.text


def test_timeout_with_one_job_uses_a_process():
    in_process = parallel.make_pool(1)
    supervised = parallel.make_pool(1, timeout=5)
    supervised.close()

    assert isinstance(in_process, local_pool.InProcessPool)
    assert isinstance(supervised, local_pool.LocalPool)
    assert len(supervised.lanes) == 1


def test_gpu_warning_names_setting(tmp_path, series_file, monkeypatch, caplog):
    import tensorflow as tf

    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["/physical_device:GPU:0"] if kind == "GPU" else real(kind))
    job = normalize_job(train_job_dict(series_file, tmp_path / "gpu.weights.h5", name="gpu_job", training={"epochs": 1, "seed": 1}))

    with caplog.at_level(logging.WARNING, logger="rnnjobs.parallel"):
        result = parallel.run_job(job, threads=1)

    assert result["status"] == "ok", result.get("error")
    assert len(result["warnings"]) == 1
    assert "GPU" in result["warnings"][0]
    assert "CUDA_VISIBLE_DEVICES" in result["warnings"][0]
    assert "gpu_job: TensorFlow sees 1 GPU(s)" in caplog.text


@pytest.mark.parametrize(
    "options,message",
    [
        (["--backend", "dask"], "needs either --scheduler or --scheduler-file"),
        (["--backend", "dask", "--scheduler", "tcp://127.0.0.1:1", "--scheduler-file", "s.json"], "needs either"),
        (["--scheduler", "tcp://127.0.0.1:1"], "need --backend dask"),
    ],
)
def test_backend_options_checked(tmp_path, series_file, options, message):
    path = write_job(tmp_path / "job.json", train_job_dict(series_file, tmp_path / "m.weights.h5"))

    result = CliRunner().invoke(main, ["train", *options, path])

    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "m.weights.h5").exists()


def test_missing_scheduler_file_exits_1(tmp_path, series_file, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(dask_pool, "SCHEDULER_FILE_WAIT_SECONDS", 0.5)
    path = write_job(tmp_path / "job.json", train_job_dict(series_file, tmp_path / "m.weights.h5"))
    missing = tmp_path / "scheduler.json"

    result = CliRunner().invoke(main, ["train", "--backend", "dask", "--scheduler-file", str(missing), path])

    assert result.exit_code == 1
    assert f"Dask scheduler file {missing} not found" in result.output
    assert not (tmp_path / "m.weights.h5").exists()


def test_timeout_with_dask_is_usage_error(tmp_path, series_file):
    path = write_job(tmp_path / "job.json", train_job_dict(series_file, tmp_path / "m.weights.h5"))

    result = CliRunner().invoke(main, ["train", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:1", "--timeout", "5", path])

    assert result.exit_code == 2
    assert "--timeout with --backend dask" in result.output
    assert "SLURM's --time" in result.output
    assert not (tmp_path / "m.weights.h5").exists()
