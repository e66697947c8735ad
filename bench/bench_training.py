"""Training throughput of ``rnnjobs train`` against a plain Keras script, measured side by side.

Both train the example job's model on the same windows of
``data/raws_ca_202401.h5``, each in its own process: LSTM(20), Dense(10, relu)
and Dense(1), batches of 32 windows of 24 steps with stride 4. They run the
same number of epochs and hold out the same validation locations. The plain script cuts all
windows into NumPy arrays, masks invalid targets with sample weights, and calls
``model.fit`` with Keras defaults. Early stopping is off, so both run every
epoch.

Windows per second count training windows only. Two ratios are printed, each
the median over ``--repeats`` alternating runs: of the training loop alone (the
``fit`` call, which includes tracing and XLA compilation), and of the whole
process (TensorFlow import, reading and checking the data, writing the model
file). ``--no-jit`` adds a run of rnnjobs with ``training.jit_compile`` false.

Run from the repository root::

    python bench/bench_training.py --epochs 30 --repeats 3
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLAIN_KERAS = r'''
import json, sys, time
import h5py, keras, numpy as np

settings = json.loads(sys.argv[1])
job = settings["job"]
data, shapes, training = job["data"], job["shapes"], job["training"]
timesteps, stride, batch = shapes["timesteps"], shapes["stride"], shapes["batch_size"]
start, stop = data["time"]["start"], data["time"]["stop"]
low, high = data["valid_range"]["fm"]

with h5py.File(data["file"], "r") as f:
    ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["station"][()]]
    keep = np.array([i for i, s in enumerate(ids) if s not in set(data["exclude_locations"])])
    x = np.stack([f[name][()][keep, start:stop] for name in data["features"]], axis=-1).astype("float32")
    y = f[data["targets"][0]][()][keep, start:stop].astype("float32")
y[(y < low) | (y > high) | ~np.isfinite(y)] = np.nan

n_validation = int(round(training["validation_split"] * len(keep)))
order = np.random.default_rng(training["seed"]).permutation(len(keep))
train_rows, validation_rows = np.sort(order[n_validation:]), np.sort(order[:n_validation])

mean, std = x[train_rows].reshape(-1, 3).mean(0), x[train_rows].reshape(-1, 3).std(0)
y_mean, y_std = np.nanmean(y[train_rows]), np.nanstd(y[train_rows])
x, y = (x - mean) / std, (y - y_mean) / y_std

def windows(rows):
    starts = range(0, x.shape[1] - timesteps + 1, stride)
    wx = np.stack([x[r, s : s + timesteps] for r in rows for s in starts])
    wy = np.stack([y[r, s : s + timesteps] for r in rows for s in starts])[..., None]
    weight = np.isfinite(wy[..., 0]).astype("float32")
    return wx, np.nan_to_num(wy), weight

train_x, train_y, train_w = windows(train_rows)
validation = windows(validation_rows)
keras.utils.set_random_seed(training["seed"])
inputs = keras.Input(shape=(timesteps, 3))
hidden = keras.layers.LSTM(20, return_sequences=True)(inputs)
hidden = keras.layers.Dense(10, activation="relu")(hidden)
model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
model.compile(optimizer=keras.optimizers.Adam(training["learning_rate"]), loss="mse")
started = time.perf_counter()
model.fit(train_x, train_y, sample_weight=train_w, batch_size=batch, epochs=training["epochs"],
          validation_data=validation, verbose=0)
fit_seconds = time.perf_counter() - started
print(json.dumps({"windows": len(train_x) * training["epochs"], "fit_seconds": fit_seconds}))
'''


def bench_job(folder, epochs, jit_compile):
    """Write the example train job with absolute paths, early stopping off and ``epochs`` epochs."""
    with open(os.path.join(REPO, "jobs", "fmc_train.json"), encoding="utf-8") as stream:
        job = json.load(stream)
    job["data"]["file"] = os.path.join(REPO, "data", "raws_ca_202401.h5")
    # The plain Keras script reads the time-varying features only, so both train on the same inputs.
    job["data"].pop("static_features", None)
    job.pop("$schema", None)
    job["training"].update({"epochs": epochs, "early_stopping": None, "jit_compile": jit_compile})
    job["output"]["model_file"] = os.path.join(folder, f"bench_jit{int(jit_compile)}.weights.h5")
    path = os.path.join(folder, f"bench_jit{int(jit_compile)}.json")
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(job, stream)
    return path, job


def run_rnnjobs(job_path):
    """Run ``rnnjobs train`` and return windows, fit seconds and wall seconds."""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "rnnjobs", "train", job_path],
        env=env, capture_output=True, text=True, check=False,
    )
    wall = time.perf_counter() - started
    if completed.returncode:
        raise RuntimeError(f"rnnjobs train failed:\n{completed.stderr[-3000:]}")
    match = re.search(r"trained on (\d+) windows in ([\d.]+) s", completed.stderr)
    if match is None:
        raise RuntimeError(f"no throughput line in the rnnjobs log:\n{completed.stderr[-3000:]}")
    return {"windows": int(match.group(1)), "fit_seconds": float(match.group(2)), "wall_seconds": wall}


def run_plain_keras(job):
    """Run the plain Keras script and return windows, fit seconds and wall seconds."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", PLAIN_KERAS, json.dumps({"job": job})],
        env=env, capture_output=True, text=True, check=False,
    )
    wall = time.perf_counter() - started
    if completed.returncode:
        raise RuntimeError(f"plain Keras script failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = wall
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30, as in the example job)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each (default 3)")
    parser.add_argument("--no-jit", action="store_true", help="also run rnnjobs with training.jit_compile false")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rnnjobs-bench-") as folder:
        jit_path, job = bench_job(folder, args.epochs, True)
        plain_path, _ = bench_job(folder, args.epochs, False)
        runs = {"rnnjobs": [], "keras": [], "rnnjobs_no_jit": []}
        for repeat in range(args.repeats):
            runs["rnnjobs"].append(run_rnnjobs(jit_path))
            runs["keras"].append(run_plain_keras(job))
            if args.no_jit:
                runs["rnnjobs_no_jit"].append(run_rnnjobs(plain_path))
            # Each run writes its model file anew; an existing one would be skipped as up to date.
            for name in os.listdir(folder):
                if name.endswith(".weights.h5"):
                    os.remove(os.path.join(folder, name))
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]['windows'] / v[-1]['fit_seconds']:.0f} windows/s" for k, v in runs.items() if v), flush=True)

    def median_rate(name, seconds):
        return statistics.median(run["windows"] / run[seconds] for run in runs[name])

    print(f"\ncores: {len(os.sched_getaffinity(0))}, epochs: {args.epochs}, repeats: {args.repeats}")
    print(f"{'run':<16} {'fit windows/s':>14} {'process windows/s':>18}")
    for name in runs:
        if runs[name]:
            print(f"{name:<16} {median_rate(name, 'fit_seconds'):>14.0f} {median_rate(name, 'wall_seconds'):>18.0f}")
    print(f"ratio rnnjobs / keras, training loop: {median_rate('rnnjobs', 'fit_seconds') / median_rate('keras', 'fit_seconds'):.2f}")
    print(f"ratio rnnjobs / keras, whole process: {median_rate('rnnjobs', 'wall_seconds') / median_rate('keras', 'wall_seconds'):.2f}")
    if args.no_jit:
        print(f"ratio jit / no jit, training loop: {median_rate('rnnjobs', 'fit_seconds') / median_rate('rnnjobs_no_jit', 'fit_seconds'):.2f}")


if __name__ == "__main__":
    main()
