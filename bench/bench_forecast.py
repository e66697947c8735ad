"""Forecast throughput and peak memory of ``rnnjobs forecast`` against one ``model.predict``, side by side.

A model with the example job's architecture (LSTM(20), Dense(10, relu),
Dense(1)) is trained for one epoch on a small file. Then an input file of
``--locations`` x ``--steps`` x 3 features is forecast twice, each in its own
process, alternately ``--repeats`` times:

- ``rnnjobs forecast``: reads, predicts and writes chunk by chunk
  (``chunks.locations`` x ``chunks.time``, the job defaults unless given).
- baseline: reads the whole input into one array, scales it, calls
  ``model.predict`` once on it (Keras's default batch size of 32), and writes
  the whole result with h5py.

Throughput is location-steps per second of the whole process (TensorFlow
import included in both). Peak memory is the maximum resident set size of
each process, from the kernel (``os.wait4``). The two forecasts are compared
value by value. The parent process imports neither TensorFlow nor rnnjobs.

Run from the repository root::

    python bench/bench_forecast.py --locations 20000 --steps 2000
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import h5py
import numpy as np

from common import FEATURES, bench_env, check_free_space, run_measured, write_job, write_series

BASELINE = r'''
import json, sys, time
import h5py, numpy as np
from rnnjobs import models
from rnnjobs.modelfile import load_model_weights, read_model_metadata
from rnnjobs.scaling import Scaler

model_file, input_file, output_file = sys.argv[1:4]
metadata = read_model_metadata(model_file)
model = models.build_prediction_model(metadata["architecture"])
load_model_weights(model, model_file, metadata)
with h5py.File(input_file, "r") as f:
    x = np.stack([f[name][()] for name in metadata["feature_names"]], axis=-1)
x = Scaler.from_dict(metadata["scalers"]["features"]).transform(x)
started = time.perf_counter()
y = model.predict(x, verbose=0)
seconds = time.perf_counter() - started
y = Scaler.from_dict(metadata["scalers"]["targets"]).inverse_transform(y)[..., 0]
with h5py.File(output_file, "w") as f:
    f["y"] = y
print(json.dumps({"predict_seconds": seconds}))
'''


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locations", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=2_000)
    parser.add_argument("--chunk-locations", type=int, help="chunks.locations of the forecast job (job default if absent)")
    parser.add_argument("--chunk-time", type=int, help="chunks.time of the forecast job (job default if absent)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--folder", default=tempfile.gettempdir(), help="where the temporary files go")
    args = parser.parse_args()

    check_free_space(args.folder, args.locations * args.steps * 4 * (len(FEATURES) + 2) + (200 << 20))
    env = bench_env()
    folder = tempfile.mkdtemp(prefix="rnnjobs-bench-forecast-", dir=args.folder)
    try:
        train_file = os.path.join(folder, "train.h5")
        write_series(train_file, 64, 240, seed=1, with_target=True)
        model_file = os.path.join(folder, "model.weights.h5")
        train_job = {
            "kind": "train",
            "data": {"file": train_file, "features": list(FEATURES), "targets": ["y"]},
            "model": {"hidden_layers": [{"type": "LSTM", "units": 20}, {"type": "Dense", "units": 10, "activation": "relu"}]},
            "shapes": {"batch_size": 32, "timesteps": 24, "stride": 4},
            "training": {"epochs": 1, "seed": 0},
            "output": {"model_file": model_file},
        }
        subprocess.run([sys.executable, "-m", "rnnjobs", "-q", "train", write_job(folder, "train", train_job)], env=env, check=True, capture_output=True)

        input_file = os.path.join(folder, "input.h5")
        write_series(input_file, args.locations, args.steps)
        chunks = {key: value for key, value in (("locations", args.chunk_locations), ("time", args.chunk_time)) if value}
        results = {"rnnjobs": [], "baseline": []}
        for repeat in range(args.repeats):
            ours = os.path.join(folder, f"forecast{repeat}.nc")
            forecast_job = {"kind": "forecast", "model_file": model_file, "data": {"file": input_file}, "output": {"file": ours}}
            if chunks:
                forecast_job["chunks"] = chunks
            job_path = write_job(folder, f"forecast{repeat}", forecast_job)
            wall, peak, _, _ = run_measured([sys.executable, "-m", "rnnjobs", "-q", "forecast", job_path], env)
            results["rnnjobs"].append((wall, peak))

            theirs = os.path.join(folder, f"baseline{repeat}.h5")
            wall, peak, _, _ = run_measured([sys.executable, "-c", BASELINE, model_file, input_file, theirs], env)
            results["baseline"].append((wall, peak))

            with h5py.File(ours, "r") as a, h5py.File(theirs, "r") as b:
                difference = float(np.max(np.abs(a["y"][()] - b["y"][()])))
            os.remove(ours)
            os.remove(theirs)
            print(f"repeat {repeat + 1}: rnnjobs {results['rnnjobs'][-1][0]:.1f} s, baseline {results['baseline'][-1][0]:.1f} s; "
                  f"max difference of the forecasts {difference:.2e}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    location_steps = args.locations * args.steps
    rate = {name: statistics.median(location_steps / wall for wall, _ in runs) for name, runs in results.items()}
    peak = {name: max(p for _, p in runs) for name, runs in results.items()}
    print(f"\ncores: {len(os.sched_getaffinity(0))}, {args.locations} locations x {args.steps} steps x {len(FEATURES)} features, chunks {chunks or 'job defaults'}")
    print(f"{'run':<10} {'location-steps/s':>18} {'peak RSS MB':>12}")
    for name in results:
        print(f"{name:<10} {rate[name]:>18.0f} {peak[name] / 2**20:>12.0f}")
    print(f"ratio rnnjobs / baseline, throughput: {rate['rnnjobs'] / rate['baseline']:.2f}")
    print(f"ratio rnnjobs / baseline, peak memory: {peak['rnnjobs'] / peak['baseline']:.2f}")


if __name__ == "__main__":
    main()
