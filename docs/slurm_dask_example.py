"""Run rnnjobs job files on Dask workers that SLURM starts, through dask-jobqueue.

Run this on a login node (or in a small batch job) with rnnjobs installed with
its Dask extra: ``pip install 'rnnjobs[dask]'``. It starts a Dask scheduler in
this process, submits SLURM batch jobs that each start Dask workers, runs the
job files on them, prints a summary and exits 0 when every job succeeded.

    python slurm_dask_example.py --account myproject --queue normal jobs/fmc_sweep.json

Change the resources below to your site's. Each worker process runs one job at
a time with one TensorFlow thread, so ``processes`` equals ``cores``. For PBS,
use ``dask_jobqueue.PBSCluster`` with the same arguments (``account`` and
``queue`` keep their meaning).
"""

import argparse
import sys

from dask_jobqueue import SLURMCluster

from rnnjobs.parallel import run_jobs
from rnnjobs.spec import load_jobs


def make_cluster(account, queue, cores, memory, walltime, venv):
    """Return a SLURM cluster whose batch jobs each start ``cores`` single-thread workers."""
    return SLURMCluster(
        account=account,
        queue=queue,
        cores=cores,
        processes=cores,
        memory=memory,
        walltime=walltime,
        # Activate the environment that has rnnjobs on the compute nodes, and
        # switch HDF5 file locking off for file systems that do not support it.
        job_script_prologue=[f"source {venv}/bin/activate", "export HDF5_USE_FILE_LOCKING=FALSE"],
        log_directory="dask-logs",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job_files", nargs="+")
    parser.add_argument("--account", required=True, help="SLURM account to charge")
    parser.add_argument("--queue", default=None, help="SLURM partition")
    parser.add_argument("--nodes", type=int, default=2, help="SLURM batch jobs to start, one node each")
    parser.add_argument("--cores", type=int, default=8, help="cores per batch job, one worker process per core")
    parser.add_argument("--memory", default="32GB", help="memory per batch job")
    parser.add_argument("--walltime", default="02:00:00")
    parser.add_argument("--venv", default="~/venvs/rnnjobs", help="virtual environment with rnnjobs on the nodes")
    parser.add_argument("--timeout", type=float, default=None, help="seconds a job may run")
    args = parser.parse_args()

    # Check the job files before any node is requested.
    jobs = load_jobs(args.job_files)

    with make_cluster(args.account, args.queue, args.cores, args.memory, args.walltime, args.venv) as cluster:
        print(cluster.job_script(), file=sys.stderr)
        cluster.scale(jobs=args.nodes)
        results = run_jobs(jobs, backend="dask", scheduler=cluster.scheduler_address, timeout=args.timeout)

    for result in results:
        print(f"{result['name']}\t{result['status']}\t{result['seconds']:.1f}\t{result.get('output') or result.get('error')}")
    return 0 if all(result["status"] == "ok" for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
