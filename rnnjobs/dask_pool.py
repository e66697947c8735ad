"""Dask backend: run jobs on the workers of a Dask cluster through joblib's dask backend."""

import logging
import os
import time

from rnnjobs import interruption
from rnnjobs.parallel import failure_result, log_start

logger = logging.getLogger(__name__)

# Batch systems may start Dask workers minutes after their scheduler.
DASK_WORKER_WAIT_SECONDS = 600
# A scheduler started in the same batch script writes its file within seconds.
SCHEDULER_FILE_WAIT_SECONDS = 120


def _wait_for_file(path, seconds):
    # distributed's Client waits for a missing scheduler file without a time limit.
    deadline = time.monotonic() + seconds
    if not os.path.exists(path):
        logger.info("waiting up to %d s for the Dask scheduler file %s", seconds, path)
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise FileNotFoundError(
                f"Dask scheduler file {path} not found after {seconds} s; start the scheduler with "
                f"'dask scheduler --scheduler-file {path}' or check the path"
            )
        time.sleep(0.5)


def _run_indexed(worker, index, job, threads, log_level):
    return index, worker(job, threads, log_level)


class DaskPool:
    """Run jobs on a Dask cluster through joblib's dask backend.

    Parameters
    ----------
    scheduler, scheduler_file : str or None
        Address of the Dask scheduler (``tcp://host:8786``), or the JSON file a
        scheduler writes with ``--scheduler-file``; exactly one is needed.
    worker, log_level
        As for :class:`rnnjobs.local_pool.LocalPool`; there is no time limit per
        job, because joblib's dask backend does not stop a task that runs past it. Each job runs with
        TensorFlow threads equal to its Dask worker's thread count, one job at
        a time per worker process.
    """

    def __init__(self, scheduler, scheduler_file, worker, log_level):
        from distributed import Client

        if (scheduler is None) == (scheduler_file is None):
            # Client() with neither would start a local cluster, which is not what a user of --backend dask meant.
            raise ValueError("the dask backend needs either a scheduler address or a scheduler file, and not both")
        self.worker, self.log_level = worker, log_level
        if scheduler_file is not None:
            _wait_for_file(scheduler_file, SCHEDULER_FILE_WAIT_SECONDS)
        self.client = Client(address=scheduler, scheduler_file=scheduler_file, set_as_default=False)
        if not self.client.scheduler_info().get("workers"):
            logger.info("waiting up to %d s for a Dask worker to connect to %s", DASK_WORKER_WAIT_SECONDS, self.client.scheduler.address)
            self.client.wait_for_workers(1, timeout=DASK_WORKER_WAIT_SECONDS)
        workers = self.client.scheduler_info().get("workers", {})
        logger.info("Dask scheduler %s with %d worker(s)", self.client.scheduler.address, len(workers))
        crowded = sorted(address for address, info in workers.items() if info.get("nthreads", 1) > 1)
        if crowded:
            logger.warning(
                "Dask worker(s) %s have several threads; rnnjobs runs one job at a time per worker process, "
                "so start workers with --nthreads 1 and more --nworkers instead", ", ".join(crowded)
            )

    def run(self, jobs, schedule):
        """Run the jobs as ``schedule`` allows and yield ``(index, result)`` in the order they finish.

        The jobs ready at the start run as one joblib call, and the forecasts
        that their train jobs release run as the next call.

        NOTE: joblib's dask backend stops the whole call when a job's time
        limit passes or Dask gives up on a task whose worker died (after
        ``distributed.scheduler.allowed-failures`` retries). The jobs not
        finished by then are reported as failed with that error.

        NOTE: after SIGTERM or SIGINT no further job starts, but the jobs
        already on the cluster are not interrupted. The run stops waiting
        when the next one finishes, and any still running may then write
        their outputs, each in one atomic step.
        """
        while interruption.received() is None:
            batch = []
            while (index := schedule.take()) is not None:
                batch.append(index)
            if not batch:
                return
            yield from self._run_batch(jobs, batch)

    def _run_batch(self, jobs, batch):
        from joblib import Parallel, delayed, parallel_config

        for index in batch:
            log_start(jobs[index], "on the Dask cluster")
        finished = set()
        calls = (delayed(_run_indexed)(self.worker, index, jobs[index], None, self.log_level) for index in batch)
        try:
            with parallel_config(backend="dask", client=self.client):
                parallel = Parallel(n_jobs=-1, batch_size=1, return_as="generator_unordered")
                for index, result in parallel(calls):
                    finished.add(index)
                    yield index, result
                    if interruption.received() is not None:
                        return
        except Exception as err:  # A lost worker. The jobs finished so far keep their results.
            error = f"the Dask run stopped before this job finished: {type(err).__name__}: {err}"
            for index in batch:
                if index not in finished:
                    yield index, failure_result(jobs[index], error, 0.0)

    def close(self):
        """Close the connection to the scheduler; the cluster keeps running."""
        self.client.close()
