"""Helpers shared by the benchmark scripts: free disk space, test files, and peak memory of a child process."""

import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = ("a", "b", "c")


def free_bytes(folder):
    """Return the free space of ``folder``'s file system, as ``df`` reports it, in bytes."""
    output = subprocess.run(["df", "-B1", "--output=avail", folder], capture_output=True, text=True, check=True).stdout
    return int(output.split()[-1])


def check_free_space(folder, needed):
    """Exit with a message if ``folder`` has less than ``needed`` bytes free."""
    available = free_bytes(folder)
    if available < needed:
        sys.exit(f"{folder}: {available / 1e9:.1f} GB free, the benchmark needs {needed / 1e9:.1f} GB")


def write_series(path, n_locations, n_steps, seed=0, with_target=False, slab=1024, chunks=(256, 2048)):
    """Write smooth random series for features a, b, c (and target y), ``slab`` locations at a time.

    The target is ``10 + a + 0.5 b``; memory use is set by ``slab``, not by the file size.
    """
    rng = np.random.default_rng(seed)
    names = FEATURES + (("y",) if with_target else ())
    with h5py.File(path, "w") as h5file:
        datasets = {
            name: h5file.create_dataset(name, (n_locations, n_steps), dtype="f4", chunks=(min(n_locations, chunks[0]), min(n_steps, chunks[1])))
            for name in names
        }
        steps = np.arange(n_steps)[None, :]
        for first in range(0, n_locations, slab):
            rows = min(slab, n_locations - first)
            phase = rng.uniform(0, 2 * np.pi, size=(rows, 1))
            values = {name: np.sin(steps / (5 + k) + phase).astype("f4") for k, name in enumerate(FEATURES)}
            values["y"] = (10 + values["a"] + 0.5 * values["b"]).astype("f4")
            for name in names:
                datasets[name][first : first + rows] = values[name]


def write_job(folder, name, job):
    """Write ``job`` as ``folder/name.json`` and return the path."""
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(job, stream)
    return path


def bench_env():
    """Return the environment for child processes: this checkout on the path, TensorFlow's notices off."""
    return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")


def run_measured(command, env):
    """Run ``command`` and return its wall seconds, its peak resident set size in bytes, and its stdout lines.

    A small wrapper process starts ``command`` and reads the child's peak RSS
    with ``os.wait4``, which the kernel measures exactly; polling could miss
    a short peak.
    """
    wrapper = (
        "import json, os, subprocess, sys\n"
        "process = subprocess.Popen(sys.argv[1:])\n"
        "_, status, usage = os.wait4(process.pid, 0)\n"
        "print(json.dumps({'max_rss_bytes': usage.ru_maxrss * 1024}), flush=True)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", wrapper, *command], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if completed.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{completed.stderr[-3000:]}")
    lines = completed.stdout.strip().splitlines()
    return wall, json.loads(lines[-1])["max_rss_bytes"], lines[:-1], completed.stderr
