"""Peak memory of ``rnnjobs train`` on an HDF5 file of several GB.

Checks with ``df`` that the disk has room, then writes a series file of
``--gigabytes`` (features a, b, c and target y, float32, ``--locations``
locations) into a temporary folder. It trains the example job's model for one
epoch on all of it: LSTM(20), Dense(10, relu) and Dense(1), batches of 32
windows of 24 steps. The folder is deleted afterwards. The window stride is chosen so that an
epoch has about ``--windows`` windows, but every block of the file is read:
once to check values and fit the scalers, and once per epoch.

The peak resident set size of the training process is read from the kernel
(``os.wait4``) and printed with its ratio to the file size and to the 1.5 GB
target.

Run from the repository root::

    python bench/bench_large_file.py --gigabytes 4.2
"""

import argparse
import os
import re
import shutil
import sys
import tempfile
import time

from common import FEATURES, bench_env, check_free_space, run_measured, write_job, write_series

TARGET_BYTES = 1.5 * 2**30


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=4.2, help="size of the input file in GB (10^9 bytes)")
    parser.add_argument("--locations", type=int, default=2_000)
    parser.add_argument("--windows", type=int, default=100_000, help="about this many training windows per epoch")
    parser.add_argument("--folder", default=tempfile.gettempdir(), help="where the temporary files go")
    args = parser.parse_args()

    n_values = len(FEATURES) + 1
    n_steps = int(args.gigabytes * 1e9 / (args.locations * n_values * 4))
    file_bytes = args.locations * n_steps * n_values * 4
    check_free_space(args.folder, file_bytes + (1 << 30))
    stride = max(1, args.locations * n_steps // args.windows)

    folder = tempfile.mkdtemp(prefix="rnnjobs-bench-large-", dir=args.folder)
    try:
        data_file = os.path.join(folder, "large.h5")
        started = time.perf_counter()
        write_series(data_file, args.locations, n_steps, with_target=True, slab=64, chunks=(64, 8192))
        file_size = os.path.getsize(data_file)
        print(f"wrote {file_size / 1e9:.2f} GB ({args.locations} locations x {n_steps} steps x {n_values} variables) "
              f"in {time.perf_counter() - started:.0f} s", flush=True)

        job = {
            "kind": "train",
            "data": {"file": data_file, "features": list(FEATURES), "targets": ["y"]},
            "model": {"hidden_layers": [{"type": "LSTM", "units": 20}, {"type": "Dense", "units": 10, "activation": "relu"}]},
            "shapes": {"batch_size": 32, "timesteps": 24, "stride": stride},
            "training": {"epochs": 1, "seed": 0},
            "output": {"model_file": os.path.join(folder, "large.weights.h5")},
        }
        wall, peak, _, log = run_measured([sys.executable, "-m", "rnnjobs", "train", write_job(folder, "large", job)], bench_env())
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    trained = re.search(r"trained on (\d+) windows in ([\d.]+) s", log)
    print(f"cores: {len(os.sched_getaffinity(0))}, stride {stride}, {trained.group(1)} windows in {trained.group(2)} s of training, {wall:.0f} s in all")
    print(f"peak RSS of rnnjobs train: {peak / 2**20:.0f} MB")
    print(f"ratio peak RSS / file size: {peak / file_size:.2f}")
    print(f"ratio peak RSS / 1.5 GB target: {peak / TARGET_BYTES:.2f}")


if __name__ == "__main__":
    main()
