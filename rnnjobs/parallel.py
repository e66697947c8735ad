"""Parallel execution: run many jobs in worker processes with joblib, each isolated.

The function a worker runs, :func:`run_job`, lives at module level and takes
plain data (a job dict), so that joblib can send it to another process and
``n_jobs=1`` runs the very same code in this process. Workers import
TensorFlow themselves; the parent process never builds a model.
"""

import logging
import os
import time
import traceback

logger = logging.getLogger(__name__)


def default_threads(n_workers):
    """Return the TensorFlow threads per worker so that all workers together use at most the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, n_workers))


def _configure_worker_logging(level):
    # A fresh worker process has no handlers; give it the parent's level on stderr.
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")


def run_job(job, threads=1, log_level=logging.INFO):
    """Run one normalized job and return a result dict; errors are caught and reported in it.

    Returns
    -------
    dict
        ``name``, ``kind``, ``status`` (``"ok"`` or ``"failed"``), ``output``,
        ``seconds``, and ``error`` when the job failed.
    """
    from rnnjobs.runtime import configure_threads

    _configure_worker_logging(log_level)
    started = time.time()
    logger.info("%s: started (%s)", job["name"], job["kind"])
    try:
        configure_threads(threads)
        if job["kind"] == "train":
            from rnnjobs.training import train_job

            result = train_job(job)
        else:
            from rnnjobs.forecasting import forecast_job

            result = forecast_job(job)
    except Exception as err:  # A failed job is reported, and the other jobs go on.
        seconds = time.time() - started
        logger.error("%s: failed after %.1f s: %s", job["name"], seconds, err)
        logger.debug("%s", traceback.format_exc())
        return {
            "name": job["name"],
            "kind": job["kind"],
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "output": None,
            "seconds": seconds,
        }
    result["status"] = "ok"
    logger.info("%s: finished in %.1f s", job["name"], result["seconds"])
    return result


def dependency_stages(jobs):
    """Split jobs into stages so that a forecast runs after the train job that writes its model file."""
    from rnnjobs.spec import output_path

    produced = {os.path.realpath(output_path(job)): job for job in jobs if job["kind"] == "train"}
    first, second = [], []
    for job in jobs:
        if job["kind"] == "forecast" and os.path.realpath(job["model_file"]) in produced:
            second.append(job)
        else:
            first.append(job)
    return [stage for stage in (first, second) if stage]


def run_jobs(jobs, n_jobs=1):
    """Run jobs, forecasts after the train jobs they depend on, ``n_jobs`` at a time.

    Parameters
    ----------
    jobs : list of dict
        Normalized jobs from :func:`rnnjobs.spec.load_jobs`.
    n_jobs : int, default=1
        Worker processes; 1 runs every job in this process.

    Returns
    -------
    list of dict
        One result per job, in the order of ``jobs``.
    """
    from joblib import Parallel, delayed

    threads = default_threads(n_jobs)
    level = logging.getLogger().getEffectiveLevel()
    results = {}
    for stage in dependency_stages(jobs):
        if n_jobs == 1:
            outcomes = [run_job(job, threads, level) for job in stage]
        else:
            outcomes = Parallel(n_jobs=n_jobs, backend="loky")(delayed(run_job)(job, threads, level) for job in stage)
        for job, outcome in zip(stage, outcomes):
            results[id(job)] = outcome
    return [results[id(job)] for job in jobs]
