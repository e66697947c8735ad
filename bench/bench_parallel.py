"""Benchmark: wall time of a sweep of small train jobs with -j 2 against -j 1, printed as a ratio.

Each run is the command a user types (``python -m rnnjobs train SWEEP -j N``)
in a fresh process, so the times include starting Python, importing
TensorFlow in every worker and writing the model files. Both runs use the
same machine, one after the other; run it on an otherwise idle machine.

    python bench/bench_parallel.py                # 8 jobs of the example job, 30 epochs
    python bench/bench_parallel.py --epochs 1     # a quick check that it works
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_JOB = os.path.join(REPO, "jobs", "fmc_train.json")


def write_sweep(folder, n_jobs, epochs):
    """Write the example train job with a sweep over ``n_jobs`` seeds into ``folder``; return its path."""
    with open(EXAMPLE_JOB, encoding="utf-8") as stream:
        job = json.load(stream)
    job["data"]["file"] = os.path.join(REPO, "data", os.path.basename(job["data"]["file"]))
    job["training"]["epochs"] = epochs
    # Early stopping would let jobs end after different numbers of epochs.
    job["training"].pop("early_stopping", None)
    job["output"]["model_file"] = os.path.join(folder, "fmc.weights.h5")
    job["sweep"] = {"seeds": list(range(1, n_jobs + 1))}
    path = os.path.join(folder, "sweep.json")
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(job, stream, indent=2)
    return path


def timed_run(job_file, workers):
    """Run the sweep with ``-j workers`` in a fresh process and return its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "rnnjobs", "-q", "train", job_file, "-j", str(workers)]
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f"{' '.join(command)} failed with exit status {completed.returncode}:\n{completed.stdout}{completed.stderr}")
    return seconds


def weights_hashes(folder):
    """Return the recorded weights hash of every model file in ``folder``."""
    from rnnjobs.modelfile import read_model_metadata

    names = sorted(name for name in os.listdir(folder) if name.endswith(".weights.h5"))
    return {name: read_model_metadata(os.path.join(folder, name))["weights_sha256"] for name in names}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs in the sweep (default: 8)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per job (default: 30, as in jobs/fmc_train.json)")
    parser.add_argument("--workers", type=int, default=2, help="-j of the parallel run (default: 2)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rnnjobs-bench-") as root:
        serial_folder, parallel_folder = os.path.join(root, "serial"), os.path.join(root, "parallel")
        os.makedirs(serial_folder)
        os.makedirs(parallel_folder)
        serial = timed_run(write_sweep(serial_folder, args.jobs, args.epochs), 1)
        parallel = timed_run(write_sweep(parallel_folder, args.jobs, args.epochs), args.workers)
        same = weights_hashes(serial_folder) == weights_hashes(parallel_folder)

    from rnnjobs.parallel import available_cores

    print(f"jobs {args.jobs}, epochs {args.epochs}, usable cores {available_cores()}")
    print(f"-j 1: {serial:.1f} s")
    print(f"-j {args.workers}: {parallel:.1f} s")
    print(f"ratio -j {args.workers} / -j 1: {parallel / serial:.2f}")
    print(f"weights hashes equal: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
