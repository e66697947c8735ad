"""Parallel execution: run many jobs in worker processes or on a Dask cluster, each failure isolated.

The function a worker runs, :func:`run_job`, lives at module level and takes
plain data (a job dict), so that it runs unchanged in a worker process, on a
Dask worker, or in this process with ``n_jobs=1``. Workers import TensorFlow
themselves; the parent process never builds a model.

Local workers are loky processes, the process backend of joblib. loky starts
each worker as a fresh interpreter rather than a fork, so a parent that has
already started TensorFlow's thread pools cannot hand a worker a broken copy
of them. Each worker is a single-process loky executor that :class:`LocalPool`
supervises. When a worker dies or a job passes its time limit, only that
worker is stopped and replaced, and the jobs in the other workers go on. A
shared executor, as ``joblib.Parallel`` uses, would fail every running job
when one worker dies, without saying which job killed it. Runs on a Dask
cluster go through :mod:`rnnjobs.dask_pool`.
"""

import collections
import concurrent.futures
import logging
import os
import socket
import threading
import time
import traceback

logger = logging.getLogger(__name__)

BACKENDS = ("loky", "dask")

# Jobs that share a process share TensorFlow's global seed and thread pools, so
# a process runs one job at a time, also on a Dask worker with several threads.
_JOB_LOCK = threading.Lock()


def available_cores():
    """Return the cores this process may use, counting CPU affinity and cgroup quotas (as SLURM sets)."""
    from joblib import cpu_count

    return max(1, cpu_count())


def default_threads(n_workers):
    """Return the TensorFlow threads per worker so that all workers together use at most the cores."""
    return max(1, available_cores() // max(1, n_workers))


def _configure_worker_logging(level):
    # A fresh worker process has no log handlers, so give it the parent's level on stderr.
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")


def _dask_worker_threads():
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError):
        return None


def failure_result(job, error, seconds):
    """Return the result dict of a job that failed with ``error`` (an exception or a message)."""
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    return {"name": job["name"], "kind": job["kind"], "status": "failed", "error": error, "output": None, "seconds": seconds}


def run_job(job, threads=None, log_level=logging.INFO):
    """Run one normalized job and return its result dict, with any error caught and reported in it.

    Parameters
    ----------
    job : dict
        A job from :func:`rnnjobs.spec.load_jobs`.
    threads : int or None, default=None
        TensorFlow intra-op and inter-op threads. None gives a Dask worker its
        own thread count and any other process all its cores.
    log_level : int, default=logging.INFO
        Log level of a worker process that has no logging set up yet.

    Returns
    -------
    dict
        ``name``, ``kind``, ``status`` (``"ok"`` or ``"failed"``), ``output``,
        ``seconds``, ``error`` when the job failed, and ``host``, ``pid``,
        ``threads`` and ``warnings`` about where and how it ran.
    """
    from rnnjobs import runtime

    _configure_worker_logging(log_level)
    if threads is None:
        threads = _dask_worker_threads() or default_threads(1)

    with _JOB_LOCK:
        started = time.time()
        where = {"host": socket.gethostname(), "pid": os.getpid()}
        try:
            where["threads"] = runtime.configure_threads(threads)
            where["warnings"] = runtime.repeatability_warnings()
            for message in where["warnings"]:
                logger.warning("%s: %s", job["name"], message)
            if job["kind"] == "train":
                from rnnjobs.training import train_job

                result = train_job(job)
            else:
                from rnnjobs.forecasting import forecast_job

                result = forecast_job(job)
        except Exception as err:  # A failed job is reported, and the other jobs go on.
            logger.debug("%s: %s", job["name"], traceback.format_exc())
            return {**failure_result(job, err, time.time() - started), **where}
    return {**result, "status": "ok", **where}


class InProcessPool:
    """Run jobs one after another in this process: the ``n_jobs=1`` path, easy to debug."""

    def __init__(self, worker, threads, log_level):
        self.worker, self.threads, self.log_level = worker, threads, log_level

    def run(self, jobs):
        """Run ``jobs`` and yield ``(index, result)`` as each finishes."""
        for index, job in enumerate(jobs):
            log_start(job, "in this process")
            yield index, self.worker(job, self.threads, self.log_level)

    def close(self):
        """Release nothing: this pool has no processes."""


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
        self.future = self.executor.submit(function, *args)

    def release(self):
        self.future, self.index, self.started = None, None, None

    def stop(self):
        """Kill the worker process (SIGKILL) and forget the executor; the next job starts a new one."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, kill_workers=True)
        self.executor = None


def _kill_lane(lane, job):
    from rnnjobs.output import remove_stale_temporaries
    from rnnjobs.spec import output_path

    lane.stop()
    # The killed job may have left its output's temporary file behind. Its final file is untouched.
    remove_stale_temporaries(output_path(job))


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

    def run(self, jobs):
        """Run ``jobs`` and yield ``(index, result)`` in the order they finish."""
        pending = collections.deque(range(len(jobs)))
        lanes = self.lanes[: len(jobs)]
        while pending or any(lane.future for lane in lanes):
            for lane in lanes:
                if lane.future is None and pending:
                    index = pending.popleft()
                    log_start(jobs[index], "in a worker process")
                    lane.submit(index, self.worker, jobs[index], self.threads, self.log_level)

            busy = [lane for lane in lanes if lane.future is not None]
            concurrent.futures.wait(
                [lane.future for lane in busy], timeout=self._seconds_to_deadline(busy), return_when=concurrent.futures.FIRST_COMPLETED
            )

            for lane in busy:
                job = jobs[lane.index]
                if lane.future.done():
                    yield lane.index, self._collect(lane, job)
                elif self.timeout is not None and time.monotonic() - lane.started > self.timeout:
                    index = lane.index
                    _kill_lane(lane, job)
                    lane.release()
                    message = f"TimeoutError: still running after the time limit of {self.timeout:g} s, so its worker process was killed"
                    yield index, failure_result(job, message, self.timeout)

    def _seconds_to_deadline(self, busy):
        if self.timeout is None:
            return None
        now = time.monotonic()
        return max(0.0, min(lane.started + self.timeout - now for lane in busy))

    def _collect(self, lane, job):
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        seconds = time.monotonic() - lane.started
        try:
            result = lane.future.result()
        except TerminatedWorkerError as err:
            _kill_lane(lane, job)
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
        lane.release()
        return result

    def close(self):
        """Stop every worker process."""
        for lane in self.lanes:
            lane.stop()


def log_start(job, where):
    """Log the line that marks a job's start."""
    logger.info("%s: started %s job %s", job["name"], job["kind"], where)


def log_end(result):
    """Log the line that marks a job's end, with its time and result."""
    if result["status"] == "ok":
        logger.info("%s: finished in %.1f s: %s", result["name"], result["seconds"], result["output"])
    else:
        logger.error("%s: failed after %.1f s: %s", result["name"], result["seconds"], result["error"])


def _producers(jobs):
    from rnnjobs.spec import output_path

    return {os.path.realpath(output_path(job)): job for job in jobs if job["kind"] == "train"}


def dependency_stages(jobs):
    """Split jobs into stages so that a forecast runs after the train job that writes its model file."""
    produced = _producers(jobs)
    first, second = [], []
    for job in jobs:
        if job["kind"] == "forecast" and os.path.realpath(job["model_file"]) in produced:
            second.append(job)
        else:
            first.append(job)
    return [stage for stage in (first, second) if stage]


def worker_count(n_jobs):
    """Return how many local workers to start for ``-j n_jobs``: at most one per core."""
    cores = available_cores()
    if n_jobs > cores:
        logger.warning(
            "-j %d is more than the %d core(s) this process may use; running %d jobs at a time so that "
            "TensorFlow threads do not outnumber the cores", n_jobs, cores, cores,
        )
    return min(n_jobs, cores)


def make_pool(n_jobs=1, *, timeout=None, backend="loky", scheduler=None, scheduler_file=None, worker=run_job):
    """Return the pool that runs jobs as :func:`run_jobs` describes; close it when done."""
    level = logging.getLogger().getEffectiveLevel()
    if backend == "dask":
        from rnnjobs.dask_pool import DaskPool

        return DaskPool(scheduler, scheduler_file, worker, level, timeout)
    if backend != "loky":
        raise ValueError(f"backend: got {backend!r}, expected one of {', '.join(map(repr, BACKENDS))}")
    if n_jobs == 1 and timeout is None:
        return InProcessPool(worker, default_threads(1), level)
    if n_jobs == 1:
        logger.info("running in one worker process, because a time limit needs a process to stop")
    n_workers = worker_count(n_jobs)
    return LocalPool(n_workers, worker, default_threads(n_workers), level, timeout)


def run_jobs(jobs, n_jobs=1, *, timeout=None, backend="loky", scheduler=None, scheduler_file=None, worker=run_job, on_result=None):
    """Run jobs, forecasts after the train jobs they depend on, ``n_jobs`` at a time.

    Parameters
    ----------
    jobs : list of dict
        Normalized jobs from :func:`rnnjobs.spec.load_jobs`.
    n_jobs : int, default=1
        Jobs at a time, each in its own worker process, at most one per core.
        1 runs every job in this process, unless ``timeout`` is set.
    timeout : float or None, default=None
        Seconds a job may run before it is stopped and reported as failed.
    backend : {"loky", "dask"}, default="loky"
        Local worker processes, or a Dask cluster given by ``scheduler`` or
        ``scheduler_file`` (``n_jobs`` is then unused: every Dask worker runs jobs).
    scheduler, scheduler_file : str or None, default=None
        Address or scheduler file of the Dask cluster.
    worker : callable, default=run_job
        Module-level function ``worker(job, threads, log_level)`` that runs one
        job in a worker and returns its result dict.
    on_result : callable or None, default=None
        Called with each result as it arrives, for example to move a progress bar.

    Returns
    -------
    list of dict
        One result per job, in the order of ``jobs``; see :func:`run_job`.
        A job that crashed its worker or passed its time limit has status
        ``"failed"`` and an ``error`` saying so, as does a forecast whose model
        came from a train job that failed.
    """
    results = {}
    failed_outputs = set()
    producers = _producers(jobs)

    def record(job, result):
        results[id(job)] = result
        log_end(result)
        if result["status"] != "ok" and job["kind"] == "train":
            failed_outputs.add(os.path.realpath(job["output"]["model_file"]))
        if on_result is not None:
            on_result(result)

    pool = make_pool(n_jobs, timeout=timeout, backend=backend, scheduler=scheduler, scheduler_file=scheduler_file, worker=worker)
    try:
        for stage in dependency_stages(jobs):
            runnable = []
            for job in stage:
                model_file = os.path.realpath(job["model_file"]) if job["kind"] == "forecast" else None
                if model_file in failed_outputs:
                    producer = producers[model_file]["name"]
                    record(job, failure_result(job, f"not run: its model file comes from job {producer!r}, which failed", 0.0))
                else:
                    runnable.append(job)

            for index, result in pool.run(runnable):
                record(runnable[index], result)
    finally:
        pool.close()
    return [results[id(job)] for job in jobs]
