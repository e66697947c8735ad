"""Parallel execution: run many jobs in worker processes or on a Dask cluster, each failure isolated.

The function a worker runs, :func:`run_job`, lives at module level and takes
plain data (a job dict), so that it runs unchanged in a worker process, on a
Dask worker, or in this process with ``n_jobs=1``. Workers import TensorFlow
themselves; the parent process never builds a model.

The pools that run the jobs are in :mod:`rnnjobs.local_pool` (this process,
or loky worker processes) and :mod:`rnnjobs.dask_pool` (a Dask cluster).
"""

import collections
import functools
import logging
import os
import socket
import threading
import time
import traceback

from rnnjobs import interruption, logs

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


def _configure_worker_logging(level, log_format):
    # A fresh worker process has no log handlers, so give it the parent's level and format on stderr.
    if not logging.getLogger().handlers:
        logs.configure_logging(level, log_format)


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


def cancelled_result(job, message, seconds, signum):
    """Return the result dict of a job that signal ``signum`` stopped or kept from starting."""
    return {
        "name": job["name"], "kind": job["kind"], "status": "cancelled", "error": message, "output": None,
        "seconds": seconds, "signal": interruption.signal_name(signum),
    }


def run_job(job, threads=None, log_level=logging.INFO, *, force=False, on_conflict="wait", log_format="text"):
    """Run one normalized job unless its output is up to date, and return its result dict.

    The job holds the lock of its output file while it runs (see
    :class:`rnnjobs.locking.OutputLock`), and first deletes the temporary
    files that a killed run left beside that output. It is skipped if the
    output was written from the same job spec and inputs (see
    :func:`rnnjobs.resume.is_up_to_date`). Any error is caught and reported
    in the result, so that the other jobs go on.

    Parameters
    ----------
    job : dict
        A job from :func:`rnnjobs.spec.load_jobs`.
    threads : int or None, default=None
        TensorFlow intra-op and inter-op threads. None gives a Dask worker its
        own thread count and any other process all its cores.
    log_level : int, default=logging.INFO
        Log level of a worker process that has no logging set up yet.
    force : bool, default=False
        Run the job even if its output is up to date. A train job then also
        deletes its checkpoint and trains from the first epoch.
    on_conflict : {"wait", "fail"}, default="wait"
        What to do when another process holds the output's lock: wait for it,
        or fail the job at once.
    log_format : {"text", "json"}, default="text"
        Log format of a worker process that has no logging set up yet.

    Returns
    -------
    dict
        ``name``, ``kind``, ``status`` (``"ok"``, ``"skipped"``, ``"failed"``
        or ``"cancelled"``), ``output``, ``seconds``, ``error`` when the job
        failed or was cancelled, ``signal`` when it was cancelled, and
        ``host``, ``pid``, ``threads`` and ``warnings`` about where and how it ran.
    """
    _configure_worker_logging(log_level, log_format)
    if threads is None:
        threads = _dask_worker_threads() or default_threads(1)

    with _JOB_LOCK, logs.job_context(job["name"]):
        started = time.time()
        where = {"host": socket.gethostname(), "pid": os.getpid()}
        try:
            with interruption.cancellable():
                result = _run_locked(job, threads, force, on_conflict, where)
        except interruption.JobCancelled as err:
            seconds = time.time() - started
            return {**cancelled_result(job, f"{err} after {seconds:.1f} s; no output was written", seconds, err.signum), **where}
        except Exception as err:  # A failed job is reported, and the other jobs go on.
            logger.debug("%s: %s", job["name"], traceback.format_exc())
            return {**failure_result(job, err, time.time() - started), **where}
    return {**result, **where}


def _run_locked(job, threads, force, on_conflict, where):
    """Run ``job`` while holding its output's lock; fill ``where`` with the threads and warnings it ran with."""
    from rnnjobs import runtime
    from rnnjobs.checkpoints import remove_checkpoint
    from rnnjobs.locking import OutputLock
    from rnnjobs.output import remove_stale_temporaries
    from rnnjobs.resume import is_up_to_date
    from rnnjobs.spec import output_path

    started = time.time()
    output = output_path(job)
    with OutputLock(output, on_conflict):
        # Only the holder of the lock may write beside the output, so what is left there is stale.
        remove_stale_temporaries(output)
        if not force and is_up_to_date(job):
            return {"name": job["name"], "kind": job["kind"], "status": "skipped", "output": output, "seconds": time.time() - started}
        if force and job["kind"] == "train":
            remove_checkpoint(output)

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
    return {**result, "status": "ok"}


class Schedule:
    """The order in which jobs may start: a forecast waits for the train job that writes its model file.

    A pool takes the next job with :meth:`take`, and the caller reports each
    result with :meth:`finish`. When a train job finishes, the forecasts that
    wait for it become ready to start, first in line. When it fails or is
    cancelled, :meth:`finish` returns their results instead.
    """

    def __init__(self, jobs):
        self.jobs = jobs
        producers = _producers(jobs)
        self.ready = collections.deque()
        self.waiting = collections.defaultdict(list)
        for index, job in enumerate(jobs):
            model_file = os.path.realpath(job["model_file"]) if job["kind"] == "forecast" else None
            if model_file in producers:
                self.waiting[producers[model_file]].append(index)
            else:
                self.ready.append(index)

    def take(self):
        """Return the index of the next job that may start, or None if none may start now."""
        return self.ready.popleft() if self.ready else None

    def finish(self, index, result):
        """Record the result of job ``index``; return ``(index, result)`` of the jobs that now cannot run."""
        dependents = self.waiting.pop(index, [])
        if result["status"] in ("ok", "skipped"):
            self.ready.extendleft(reversed(dependents))
            return []
        name = self.jobs[index]["name"]
        if result["status"] == "cancelled":
            return [
                (other, cancelled_result(self.jobs[other], f"not started: its model file comes from job {name!r}, which was cancelled", 0.0, result["signal"]))
                for other in dependents
            ]
        return [(other, failure_result(self.jobs[other], f"not run: its model file comes from job {name!r}, which failed", 0.0)) for other in dependents]


def log_start(job, where):
    """Log the line that marks a job's start."""
    logger.info("%s: started %s job %s", job["name"], job["kind"], where, extra={"job": job["name"]})


def log_end(result):
    """Log the line that marks a job's end, with its time and result."""
    name, seconds = result["name"], result["seconds"]
    extra = {"job": name}
    if result["status"] == "ok":
        logger.info("%s: finished in %.1f s: %s", name, seconds, result["output"], extra=extra)
    elif result["status"] == "skipped":
        logger.info("%s: skipped, because %s is up to date (same job spec and inputs); --force runs it again", name, result["output"], extra=extra)
    elif result["status"] == "cancelled":
        logger.warning("%s: cancelled: %s", name, result["error"], extra=extra)
    else:
        logger.error("%s: failed after %.1f s: %s", name, seconds, result["error"], extra=extra)


def _log_interruption(signum, results):
    done = [result["name"] for result in results if result["status"] in ("ok", "skipped")]
    failed = [result["name"] for result in results if result["status"] == "failed"]
    cancelled = [result["name"] for result in results if result["status"] == "cancelled"]
    logger.warning(
        "stopped by %s: %d job(s) finished or up to date (%s), %d failed (%s), %d cancelled (%s); "
        "run the same command again to do the cancelled jobs",
        interruption.signal_name(signum), len(done), ", ".join(done) or "none", len(failed), ", ".join(failed) or "none",
        len(cancelled), ", ".join(cancelled) or "none",
    )


def _producers(jobs):
    """Map the real path of each model file that a train job writes to the index of that job."""
    from rnnjobs.spec import output_path

    return {os.path.realpath(output_path(job)): index for index, job in enumerate(jobs) if job["kind"] == "train"}


def worker_count(n_jobs):
    """Return how many local workers to start for ``-j n_jobs``: at most one per core."""
    cores = available_cores()
    if n_jobs > cores:
        logger.warning(
            "-j %d is more than the %d core(s) this process may use; running %d jobs at a time so that "
            "TensorFlow threads do not outnumber the cores", n_jobs, cores, cores,
        )
    return min(n_jobs, cores)


# joblib's dask backend does not stop a task that runs past joblib's timeout.
DASK_TIMEOUT_MESSAGE = (
    "a time limit per job is not enforced on a Dask cluster; limit the run's wall time in the batch "
    "scheduler instead (for example SLURM's --time), or run with -j on one machine"
)


def make_pool(n_jobs=1, *, timeout=None, backend="loky", scheduler=None, scheduler_file=None, worker=run_job):
    """Return the pool that runs jobs as :func:`run_jobs` describes; close it when done."""
    level = logging.getLogger().getEffectiveLevel()
    if backend == "dask":
        from rnnjobs.dask_pool import DaskPool

        if timeout is not None:
            raise ValueError(DASK_TIMEOUT_MESSAGE)
        return DaskPool(scheduler, scheduler_file, worker, level)
    if backend != "loky":
        raise ValueError(f"backend: got {backend!r}, expected one of {', '.join(map(repr, BACKENDS))}")

    from rnnjobs.local_pool import InProcessPool, LocalPool
    if n_jobs == 1 and timeout is None:
        return InProcessPool(worker, default_threads(1), level)
    if n_jobs == 1:
        logger.info("running in one worker process, because a time limit needs a process to stop")
    n_workers = worker_count(n_jobs)
    return LocalPool(n_workers, worker, default_threads(n_workers), level, timeout)


def run_jobs(
    jobs, n_jobs=1, *, timeout=None, backend="loky", scheduler=None, scheduler_file=None, worker=None, on_result=None,
    force=False, on_conflict="wait",
):
    """Run jobs, each forecast after the train job it depends on, ``n_jobs`` at a time.

    When a train job of the same run writes a forecast's model file, the
    forecast starts as soon as that train job has finished or has been
    skipped as up to date.
    SIGTERM and SIGINT stop the run as :class:`rnnjobs.local_pool.LocalPool`
    and :mod:`rnnjobs.interruption` describe; every job not finished then is
    reported as ``"cancelled"``, and no output of theirs is written.

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
    worker : callable or None, default=None
        Module-level function ``worker(job, threads, log_level)`` that runs one
        job in a worker and returns its result dict; None means
        :func:`run_job` with ``force`` and ``on_conflict``.
    on_result : callable or None, default=None
        Called with each result as it arrives, for example to move a progress bar.
    force : bool, default=False
        Run jobs whose outputs are up to date; see :func:`run_job`.
    on_conflict : {"wait", "fail"}, default="wait"
        What a job does when another process writes its output; see :func:`run_job`.

    Returns
    -------
    list of dict
        One result per job, in the order of ``jobs``; see :func:`run_job`.
        A job that crashed its worker or passed its time limit has status
        ``"failed"`` and an ``error`` saying so, as does a forecast whose model
        came from a train job that failed.
    """
    if worker is None:
        worker = functools.partial(run_job, force=force, on_conflict=on_conflict, log_format=logs.current_format())
    results = {}
    schedule = Schedule(jobs)

    def record(index, result):
        results[index] = result
        log_end(result)
        if on_result is not None:
            on_result(result)
        for other, other_result in schedule.finish(index, result):
            record(other, other_result)

    with interruption.handling_signals():
        pool = make_pool(n_jobs, timeout=timeout, backend=backend, scheduler=scheduler, scheduler_file=scheduler_file, worker=worker)
        try:
            for index, result in pool.run(jobs, schedule):
                record(index, result)
        finally:
            pool.close()
        signum = interruption.received()

    if signum is not None:
        for index, job in enumerate(jobs):
            if index not in results:
                record(index, cancelled_result(job, f"not started: the run was stopped by {interruption.signal_name(signum)}", 0.0, signum))
        _log_interruption(signum, [results[index] for index in range(len(jobs))])
    return [results[index] for index in range(len(jobs))]
