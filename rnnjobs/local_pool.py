"""Local pools: run jobs in this process, or in loky worker processes that are stopped and replaced one by one.

loky is the process backend of joblib. It starts each worker as a fresh
interpreter rather than a fork, so a parent that has already started
TensorFlow's thread pools cannot hand a worker a broken copy of them. Each
worker is a single-process loky executor that :class:`LocalPool` supervises.
When a worker dies or a job passes its time limit, only that worker is
stopped and replaced, and the jobs in the other workers go on. A shared
executor, as ``joblib.Parallel`` uses, would fail every running job when one
worker dies, without saying which job killed it.
"""

import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
import time

from rnnjobs import interruption
from rnnjobs.parallel import cancelled_result, failure_result, log_start

logger = logging.getLogger(__name__)

# Seconds that running jobs get to stop after SIGTERM or SIGINT before their
# workers are killed. It is below SLURM's default KillWait of 30 s, so that
# rnnjobs still reports which jobs finished before SLURM kills it.
CANCEL_GRACE_SECONDS = 20

# How often a local pool that waits for its workers checks for a signal.
SIGNAL_POLL_SECONDS = 0.5


class InProcessPool:
    """Run jobs one after another in this process: the ``n_jobs=1`` path, easy to debug."""

    def __init__(self, worker, threads, log_level):
        self.worker, self.threads, self.log_level = worker, threads, log_level

    def run(self, jobs, schedule):
        """Run the jobs in the order ``schedule`` gives and yield ``(index, result)`` as each finishes.

        After SIGTERM or SIGINT no further job starts; the running job stops
        itself, see :mod:`rnnjobs.interruption`.
        """
        while interruption.received() is None:
            index = schedule.take()
            if index is None:
                return
            log_start(jobs[index], "in this process")
            yield index, self.worker(jobs[index], self.threads, self.log_level)

    def close(self):
        """Release nothing: this pool has no processes."""


# How often a worker checks that the rnnjobs process that started it is still alive.
PARENT_POLL_SECONDS = 1.0

_parent_watch = {}


def _watch_parent(parent):
    """Cancel the running job and end this worker once its parent process has gone.

    A parent killed with SIGKILL (the out-of-memory killer, a batch system's
    final kill) cannot stop its workers, so each worker checks for itself. It
    sends itself SIGTERM, which cancels its job without partial output, and
    exits after the grace period if the job has not ended the process by then.
    """
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    logger.error("the rnnjobs process %d that started this worker has gone; cancelling the running job", parent)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(CANCEL_GRACE_SECONDS)
    os._exit(1)


def _run_in_worker(function, *args):
    # The signal handlers stay installed for the life of the worker process, which runs one job at a time.
    interruption.install_in_worker()
    if "thread" not in _parent_watch:
        _parent_watch["thread"] = threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True, name="rnnjobs-parent-watch")
        _parent_watch["thread"].start()
    return function(*args)


class _Lane:
    """One worker process, a single-worker loky executor, running one job at a time."""

    def __init__(self, env):
        self.env = env
        self.executor = None
        self.future = None
        self.index = None
        self.started = None

    def submit(self, index, function, *args):
        from joblib.externals.loky import ProcessPoolExecutor

        if self.executor is None:
            self.executor = ProcessPoolExecutor(max_workers=1, env=self.env)
        self.index, self.started = index, time.monotonic()
        self.future = self.executor.submit(_run_in_worker, function, *args)

    def release(self):
        self.future, self.index, self.started = None, None, None

    def send_signal(self, signum):
        """Send ``signum`` to the worker process, which then stops its job as :mod:`rnnjobs.interruption` describes."""
        if self.executor is None:
            return
        # loky keeps no public list of its worker processes; _processes maps their pids to them.
        for pid in list(getattr(self.executor, "_processes", {})):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self):
        """Kill the worker process (SIGKILL) and forget the executor; the next job starts a new one."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, kill_workers=True)
        self.executor = None


def _kill_lane(lane, job):
    from rnnjobs.locking import OutputLock, OutputLockedError
    from rnnjobs.output import remove_stale_temporaries
    from rnnjobs.spec import output_path

    lane.stop()
    # The killed job may have left its output's temporary file behind. Its final
    # file is untouched. The lock died with the worker, so if it is held now,
    # another run is writing that output, and the temporary file is its own.
    output = output_path(job)
    try:
        with OutputLock(output, on_conflict="fail"):
            remove_stale_temporaries(output)
    except OutputLockedError as err:
        logger.info("%s: left the temporary files beside %s, because the lock was not free: %s", job["name"], output, err)


class LocalPool:
    """Run jobs in ``n_workers`` loky worker processes, stopping and replacing only a worker that fails.

    Parameters
    ----------
    n_workers : int
        Worker processes; each runs one job at a time and is reused for the next.
    worker : callable
        Module-level function ``worker(job, threads, log_level)`` returning a result dict.
    threads : int
        TensorFlow threads in each worker.
    log_level : int
        Log level of the workers.
    timeout : float or None
        Seconds a job may run, counted from its dispatch to a worker and so
        including the start-up of a new worker process. A job still running
        then is reported as failed and its worker is killed.
    """

    def __init__(self, n_workers, worker, threads, log_level, timeout=None):
        self.worker, self.threads, self.log_level, self.timeout = worker, threads, log_level, timeout
        # The loky workers inherit these before NumPy loads, as joblib's own backend sets them.
        env = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        self.lanes = [_Lane(env) for _ in range(n_workers)]

    def run(self, jobs, schedule):
        """Run the jobs as ``schedule`` allows and yield ``(index, result)`` in the order they finish.

        After SIGTERM or SIGINT no further job starts, and the signal goes on
        to the workers, whose jobs stop and report ``"cancelled"``. A worker
        still running :data:`CANCEL_GRACE_SECONDS` later, or at a second
        signal, is killed.
        """
        lanes = self.lanes[: len(jobs)]
        stopping_since = None
        while True:
            signum = interruption.received()
            if signum is not None and stopping_since is None:
                stopping_since = time.monotonic()
                for lane in lanes:
                    if lane.future is not None:
                        lane.send_signal(signum)

            if stopping_since is None:
                for lane in [lane for lane in lanes if lane.future is None]:
                    index = schedule.take()
                    if index is None:
                        break
                    log_start(jobs[index], "in a worker process")
                    lane.submit(index, self.worker, jobs[index], self.threads, self.log_level)

            busy = [lane for lane in lanes if lane.future is not None]
            if not busy:
                return
            concurrent.futures.wait(
                [lane.future for lane in busy], timeout=self._seconds_to_wait(busy), return_when=concurrent.futures.FIRST_COMPLETED
            )

            for lane in busy:
                job = jobs[lane.index]
                if lane.future.done():
                    yield lane.index, self._collect(lane, job)
                elif stopping_since is not None and (
                    time.monotonic() - stopping_since > CANCEL_GRACE_SECONDS or interruption.signal_count() > 1
                ):
                    index, seconds = lane.index, time.monotonic() - lane.started
                    _kill_lane(lane, job)
                    lane.release()
                    name = interruption.signal_name(signum)
                    yield index, cancelled_result(job, f"still running after {name}, so its worker process was killed; no output was written", seconds, signum)
                elif self.timeout is not None and time.monotonic() - lane.started > self.timeout:
                    index = lane.index
                    _kill_lane(lane, job)
                    lane.release()
                    message = f"TimeoutError: still running after the time limit of {self.timeout:g} s, so its worker process was killed"
                    yield index, failure_result(job, message, self.timeout)

    def _seconds_to_wait(self, busy):
        # Wake up in time for the nearest time limit, and often enough to notice a signal.
        if self.timeout is None:
            return SIGNAL_POLL_SECONDS
        now = time.monotonic()
        return max(0.0, min(SIGNAL_POLL_SECONDS, *(lane.started + self.timeout - now for lane in busy)))

    def _collect(self, lane, job):
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        seconds = time.monotonic() - lane.started
        try:
            result = lane.future.result()
        except TerminatedWorkerError as err:
            _kill_lane(lane, job)
            signum = interruption.received()
            if signum is not None:
                # The signal reached the worker before it could stop its job cleanly, as during its start-up.
                result = cancelled_result(job, f"its worker process ended at {interruption.signal_name(signum)}; no output was written", seconds, signum)
            else:
                # loky's message ends with the exit codes, such as {EXIT(3)} or {SIGKILL(-9)}.
                codes = str(err).rsplit("The exit codes of the workers are", 1)[-1].strip()
                result = failure_result(
                    job,
                    f"WorkerCrashedError: the worker process running this job stopped with exit code {codes}. A crash in "
                    "native code or the out-of-memory killer are the usual causes. To see how far the job got, run it "
                    "alone in the rnnjobs process: rnnjobs -v train JOB -j 1",
                    seconds,
                )
        except Exception as err:  # The job could not be sent to or read back from the worker.
            _kill_lane(lane, job)
            result = failure_result(job, err, seconds)
        else:
            if result["status"] == "cancelled":
                # A signal sent to this worker alone stopped its job; the worker would cancel every later job too.
                lane.stop()
        lane.release()
        return result

    def close(self):
        """Stop every worker process."""
        for lane in self.lanes:
            lane.stop()
