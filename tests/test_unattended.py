"""Unattended runs in real processes: kills, overlapping writers, resume, signals and training checkpoints."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, forecast_job_dict, hold_open, train_job_dict, write_job, write_series_file
from rnnjobs import checkpoints
from rnnjobs.cli import main
from rnnjobs.modelfile import read_model_metadata
from rnnjobs.output import TEMPORARY_MARKER
from rnnjobs.spec import normalize_job
from rnnjobs.training import train_job

# A guard against a hang, far above the seconds these runs take; not a speed check.
HANG_GUARD_SECONDS = 300

DROPOUT_MODEL = {
    "hidden_layers": [
        {"type": "LSTM", "units": 6, "dropout": 0.1, "recurrent_dropout": 0.2},
        {"type": "Dense", "units": 4, "activation": "relu"},
    ]
}


class Run:
    """An ``rnnjobs`` command in a child process, with its stdout and stderr collected as it runs."""

    def __init__(self, folder, *arguments, new_session=False):
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rnnjobs", *map(str, arguments)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=folder, start_new_session=new_session,
        )
        self.stdout, self.stderr = [], []
        self.readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _collect(stream, lines):
        for line in stream:
            lines.append(line)

    def wait_for_log(self, text):
        wait_until(lambda: any(text in line for line in self.stderr) or self.process.poll() is not None, f"{text!r} in the log")
        assert any(text in line for line in self.stderr), self.log()

    def finish(self):
        """Wait for the process to end and return its exit status."""
        try:
            self.process.wait(HANG_GUARD_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        for reader in self.readers:
            reader.join(10)
        return self.process.returncode

    def log(self):
        return "".join(self.stderr)[-4000:]

    def summary(self):
        """Return the status column of the summary table, by job name."""
        rows = [line.split() for line in self.stdout]
        return {row[0]: row[1] for row in rows[1:] if len(row) > 1}


def wait_until(condition, description):
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {description} after {HANG_GUARD_SECONDS} s")
        time.sleep(0.02)


def temporaries(folder):
    return sorted(name for name in os.listdir(folder) if TEMPORARY_MARKER in name)


def new_temporary(folder, run, before):
    """Wait until ``run`` has created a temporary file that was not in ``before``, or has ended."""
    # A temporary file left by an earlier test must not count, or the signal could reach the
    # new process before it has installed its handlers.
    wait_until(lambda: set(temporaries(folder)) - set(before) or run.process.poll() is not None, "the temporary forecast file")


def checkpoint_epoch(output):
    """Return the epochs recorded in the checkpoint of ``output``, or None if there is none yet."""
    try:
        with h5py.File(os.path.join(checkpoints.checkpoint_folder(output), checkpoints.STATE_FILE), "r") as h5file:
            return json.loads(h5file.attrs["epoch"])
    except (OSError, KeyError):
        return None


@pytest.fixture(scope="module")
def long_forecast(tmp_path_factory):
    """Return a forecast job file whose run takes seconds: tiny time chunks over a long series."""
    folder = tmp_path_factory.mktemp("long_forecast")
    data_file = write_series_file(folder / "train.h5")
    model_file = folder / "m.weights.h5"
    train_job(normalize_job(train_job_dict(data_file, model_file, training={"epochs": 1, "seed": 1})))
    long_file = write_series_file(folder / "long.h5", n_locations=4, n_times=20000)
    job = forecast_job_dict(long_file, model_file, folder / "f.nc", name="long", chunks={"locations": 4, "time": 8})
    return write_job(folder / "long.json", job), str(folder / "f.nc")


def assert_valid_forecast(path):
    with h5py.File(path, "r") as h5file:
        values = h5file["y"][...]
        assert values.shape == (4, 20000)
        assert np.isfinite(values).all()
        assert "provenance" in h5file.attrs


# A forecast killed with SIGKILL while it writes.


def test_killed_forecast_leaves_no_output(long_forecast):
    job_file, output = long_forecast
    folder = os.path.dirname(output)
    if os.path.exists(output):
        os.remove(output)

    before_start = temporaries(folder)
    run = Run(folder, "forecast", job_file)
    new_temporary(folder, run, before_start)
    time.sleep(0.5)
    assert run.process.poll() is None, f"the forecast ended before the kill\n{run.log()}"
    run.process.kill()
    run.finish()

    assert not os.path.exists(output)
    assert len(temporaries(folder)) == 1

    rerun = Run(folder, "forecast", job_file)
    assert rerun.finish() == 0, rerun.log()
    assert_valid_forecast(output)
    assert temporaries(folder) == []
    assert "removed 1 temporary file(s) left by an interrupted run" in rerun.log()


def test_sigterm_during_write_removes_temporary(long_forecast):
    job_file, output = long_forecast
    folder = os.path.dirname(output)

    before_start = temporaries(folder)
    run = Run(folder, "forecast", "--force", job_file)
    new_temporary(folder, run, before_start)
    # An earlier test may have written the output; --force writes it again.
    before = os.stat(output).st_mtime_ns if os.path.exists(output) else None
    run.process.send_signal(signal.SIGTERM)
    status = run.finish()

    assert status == 143, run.log()
    assert run.summary() == {"long": "cancelled"}
    assert temporaries(folder) == []
    if before is None:
        assert not os.path.exists(output)
    else:
        assert os.stat(output).st_mtime_ns == before
        assert_valid_forecast(output)


def test_killed_parent_stops_its_workers(long_forecast):
    import psutil

    job_file, output = long_forecast
    folder = os.path.dirname(output)
    before = os.stat(output).st_mtime_ns if os.path.exists(output) else None

    before_start = temporaries(folder)
    run = Run(folder, "forecast", "-j", "2", "--force", job_file)
    new_temporary(folder, run, before_start)
    workers = psutil.Process(run.process.pid).children(recursive=True)
    run.process.kill()
    run.process.wait(HANG_GUARD_SECONDS)

    # Each worker notices that its parent has gone, cancels its job and exits.
    wait_until(lambda: not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers), "the workers to exit")
    assert workers
    assert temporaries(folder) == []
    if before is None:
        assert not os.path.exists(output)
    else:
        assert os.stat(output).st_mtime_ns == before


# Two processes writing one output.


def test_second_writer_fails_on_conflict(long_forecast):
    job_file, output = long_forecast
    folder = os.path.dirname(output)

    before_start = temporaries(folder)
    first = Run(folder, "forecast", "--force", job_file)
    new_temporary(folder, first, before_start)
    first.process.send_signal(signal.SIGSTOP)  # Hold the first run inside its write.
    try:
        second = Run(folder, "forecast", "--on-conflict", "fail", job_file)
        second_status = second.finish()
    finally:
        first.process.send_signal(signal.SIGCONT)

    assert first.finish() == 0, first.log()
    assert second_status == 1, second.log()
    assert "another run is writing this file" in second.log()
    assert second.summary() == {"long": "failed"}
    assert_valid_forecast(output)
    assert temporaries(folder) == []


def test_second_writer_waits_then_skips(long_forecast):
    job_file, output = long_forecast
    folder = os.path.dirname(output)

    before_start = temporaries(folder)
    first = Run(folder, "forecast", "--force", job_file)
    new_temporary(folder, first, before_start)
    first.process.send_signal(signal.SIGSTOP)
    try:
        second = Run(folder, "forecast", job_file)
        second.wait_for_log("another run is writing this file; waiting for it")
    finally:
        first.process.send_signal(signal.SIGCONT)

    assert first.finish() == 0, first.log()
    assert second.finish() == 0, second.log()
    assert first.summary() == {"long": "ok"}
    # The second run waited, then found the first run's output up to date.
    assert second.summary() == {"long": "skipped"}
    assert_valid_forecast(output)


# Resume: skip what is up to date, run what changed.


def test_resume_skips_unchanged_reruns_changed(tmp_path):
    data_file = write_series_file(tmp_path / "d.h5")
    model_file, forecast_file = tmp_path / "m.weights.h5", tmp_path / "f.nc"
    train = train_job_dict(data_file, model_file, name="train", training={"epochs": 1, "seed": 1})
    train_file = write_job(tmp_path / "train.json", train)
    forecast_file_job = write_job(tmp_path / "forecast.json", forecast_job_dict(data_file, model_file, forecast_file, name="forecast"))

    def run(*options):
        process = Run(tmp_path, "run", *options, forecast_file_job, train_file)
        assert process.finish() == 0, process.log()
        return process

    first = run()
    written = {path: os.stat(path).st_mtime_ns for path in (model_file, forecast_file)}
    unchanged = run()
    with open(train_file, "w", encoding="utf-8") as stream:
        json.dump(train, stream, indent=8)  # Whitespace only: the job spec is the same.
    reformatted = run()
    untouched = {path: os.stat(path).st_mtime_ns for path in (model_file, forecast_file)}
    write_job(train_file, {**train, "training": {"epochs": 2, "seed": 1}})
    changed = run()
    forced = run("--force")

    assert first.summary() == {"forecast": "ok", "train": "ok"}
    assert unchanged.summary() == {"forecast": "skipped", "train": "skipped"}
    assert "train: skipped, because" in unchanged.log()
    assert reformatted.summary() == {"forecast": "skipped", "train": "skipped"}
    assert untouched == written
    # The forecast reads the retrained model file, so it runs again too.
    assert changed.summary() == {"forecast": "ok", "train": "ok"}
    assert "the job spec changed" in changed.log()
    assert forced.summary() == {"forecast": "ok", "train": "ok"}
    assert read_model_metadata(model_file)["job"]["training"]["epochs"] == 2


# SIGTERM and SIGINT during a run of four jobs.


@pytest.mark.parametrize(
    "n_jobs,signum,group",
    [(2, signal.SIGTERM, False), (2, signal.SIGINT, True), (1, signal.SIGTERM, False)],
    ids=["j2-sigterm-to-parent", "j2-sigint-to-group", "j1-sigterm"],
)
def test_signal_keeps_finished_outputs_only(tmp_path, n_jobs, signum, group):
    data_file = write_series_file(tmp_path / "d.h5")
    names = ["quick", "slow_1", "slow_2", "slow_3"]
    paths = []
    for name in names:
        epochs = 1 if name == "quick" else 500
        job = train_job_dict(data_file, tmp_path / f"{name}.weights.h5", name=name, training={"epochs": epochs, "seed": 1})
        paths.append(write_job(tmp_path / f"{name}.json", job))

    # quick finishes first; with -j 2, slow_2 then takes its worker and slow_3 waits.
    running = ["slow_1", "slow_2"] if n_jobs == 2 else ["slow_1"]

    run = Run(tmp_path, "train", "-j", n_jobs, *paths, new_session=group)
    wait_until(lambda: (tmp_path / "quick.weights.h5").exists() or run.process.poll() is not None, "the quick job's model file")
    for name in running:
        # Each running job has trained an epoch, so it has a checkpoint.
        wait_until(lambda: checkpoint_epoch(str(tmp_path / f"{name}.weights.h5")) or run.process.poll() is not None, f"a checkpoint of {name}")
    assert run.process.poll() is None, run.log()
    if group:
        os.killpg(run.process.pid, signum)
    else:
        run.process.send_signal(signum)
    status = run.finish()

    assert status == 128 + signum, run.log()
    assert run.summary() == {"quick": "ok", "slow_1": "cancelled", "slow_2": "cancelled", "slow_3": "cancelled"}
    details = {line.split()[0]: line for line in run.stdout[1:]}
    # The running jobs stopped themselves at the signal rather than being killed after the grace period.
    for name in running:
        assert f"stopped by {signal.Signals(signum).name} after" in details[name]
    assert "not started" in details["slow_3"]
    assert f"stopped by {signal.Signals(signum).name}: 1 job(s) finished or up to date (quick)" in run.log()
    assert read_model_metadata(tmp_path / "quick.weights.h5")["weights_sha256"]
    for name in names[1:]:
        assert not (tmp_path / f"{name}.weights.h5").exists()
    assert temporaries(tmp_path) == []
    # The cancelled trainings keep their checkpoints for the next run.
    for name in running:
        assert checkpoint_epoch(str(tmp_path / f"{name}.weights.h5")) >= 1


# Training checkpoints.


@pytest.mark.parametrize("model", [None, DROPOUT_MODEL], ids=["plain", "dropout"])
def test_interrupted_training_resumes_same_hash(tmp_path, model):
    data_file = write_series_file(tmp_path / "d.h5", n_locations=8, n_times=200)
    extra = {"model": model} if model else {}
    paths = {}
    for name in ("straight", "interrupted"):
        job = train_job_dict(data_file, tmp_path / f"{name}.weights.h5", name=name, training={"epochs": 4, "seed": 3}, **extra)
        paths[name] = write_job(tmp_path / f"{name}.json", job)
    interrupted_output = str(tmp_path / "interrupted.weights.h5")

    straight = Run(tmp_path, "train", paths["straight"])
    assert straight.finish() == 0, straight.log()

    first = Run(tmp_path, "train", paths["interrupted"])
    wait_until(lambda: (checkpoint_epoch(interrupted_output) or 0) >= 2 or first.process.poll() is not None, "the checkpoint of epoch 2")
    first.process.kill()
    first.finish()
    epochs_done = checkpoint_epoch(interrupted_output)
    resumed = Run(tmp_path, "train", paths["interrupted"])
    assert resumed.finish() == 0, resumed.log()

    assert epochs_done in (2, 3)
    assert f"resuming from the checkpoint {checkpoints.checkpoint_folder(interrupted_output)} after epoch {epochs_done} of 4" in resumed.log()
    expected = read_model_metadata(tmp_path / "straight.weights.h5")
    got = read_model_metadata(interrupted_output)
    assert got["weights_sha256"] == expected["weights_sha256"]
    assert got["history"] == expected["history"]
    assert not os.path.exists(checkpoints.checkpoint_folder(interrupted_output))


@pytest.fixture
def left_checkpoint(series_file, tmp_path, monkeypatch):
    """Train 2 epochs and keep the checkpoint that a successful run deletes; return the job dict."""
    job = train_job_dict(series_file, tmp_path / "m.weights.h5", name="kept", training={"epochs": 2, "seed": 1})
    with monkeypatch.context() as patch:
        patch.setattr(checkpoints.TrainingCheckpoint, "remove", lambda self: None)
        train_job(normalize_job(job))
    os.remove(tmp_path / "m.weights.h5")
    return job


def test_checkpoint_of_same_job_resumes(left_checkpoint):
    checkpoint = checkpoints.TrainingCheckpoint(normalize_job(left_checkpoint))

    assert checkpoint.initial_epoch == 2
    assert len(checkpoint.history["loss"]) == 2


@pytest.mark.parametrize("change", ["spec", "data"])
def test_changed_job_discards_checkpoint(left_checkpoint, series_file, caplog, change):
    job = left_checkpoint
    if change == "spec":
        job = {**job, "training": {"epochs": 3, "seed": 1}}
    else:
        stat = os.stat(series_file)
        os.utime(series_file, (stat.st_atime, stat.st_mtime + 10))

    with caplog.at_level(logging.INFO, logger="rnnjobs.checkpoints"):
        checkpoint = checkpoints.TrainingCheckpoint(normalize_job(job))

    assert checkpoint.initial_epoch == 0
    assert not os.path.exists(checkpoint.folder)
    assert ("the job spec changed" if change == "spec" else "the data file") in caplog.text


def test_force_discards_checkpoint(left_checkpoint, tmp_path):
    path = write_job(tmp_path / "kept.json", left_checkpoint)

    result = CliRunner().invoke(main, ["train", "--force", path])

    assert result.exit_code == 0, result.output
    assert "resuming" not in result.output
    assert len(read_model_metadata(tmp_path / "m.weights.h5")["history"]["loss"]) == 2


# Logs for log collectors.


def test_json_log_lines_name_job(series_file, tmp_path):
    job = train_job_dict(series_file, tmp_path / "m.weights.h5", name="json_job", training={"epochs": 1, "seed": 1})
    path = write_job(tmp_path / "job.json", job)

    result = CliRunner().invoke(main, ["--log-format", "json", "train", path])

    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(entry.get("job") == "json_job" and "finished in" in entry["message"] for entry in entries)
    summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert summary == [
        {"job": "json_job", "kind": "train", "status": "ok", "seconds": summary[0]["seconds"], "output": str(tmp_path / "m.weights.h5")}
    ]


# An output that another process has open.


@pytest.fixture
def trained_job(series_file, tmp_path, monkeypatch):
    monkeypatch.delenv("HDF5_USE_FILE_LOCKING", raising=False)
    job = train_job_dict(series_file, tmp_path / "m.weights.h5", name="held", training={"epochs": 1, "seed": 1})
    path = write_job(tmp_path / "held.json", job)
    assert CliRunner().invoke(main, ["train", path]).exit_code == 0
    return path, tmp_path / "m.weights.h5"


def test_output_open_for_writing_fails_job(trained_job):
    path, output = trained_job
    before = os.stat(output).st_ino  # The writer changes the file's time, and a rerun would give it a new inode.
    writer = hold_open(output, "a")
    try:
        result = CliRunner().invoke(main, ["train", path])
    finally:
        writer.kill()
        writer.wait()

    assert result.exit_code == 1, result.output
    assert f"{output}: cannot check whether this output is up to date" in result.output
    assert "HDF5_USE_FILE_LOCKING=FALSE" in result.output
    assert os.stat(output).st_ino == before


def test_output_open_for_reading_is_replaced(trained_job):
    path, output = trained_job
    reader = hold_open(output, "r")
    try:
        skipped = CliRunner().invoke(main, ["train", path])
        forced = CliRunner().invoke(main, ["train", "--force", path])
    finally:
        reader.kill()
        reader.wait()

    assert skipped.exit_code == 0, skipped.output
    assert "held  skipped" in skipped.output
    assert forced.exit_code == 0, forced.output
    assert "held  ok" in forced.output
    assert read_model_metadata(output)["weights_sha256"]
