"""TensorFlow process set-up: thread pools, seeds, and provenance of a run."""

import datetime
import logging
import os
import platform
import socket

logger = logging.getLogger(__name__)


def configure_threads(threads):
    """Cap TensorFlow's intra-op and inter-op thread pools at ``threads`` each.

    TensorFlow sizes its pools from the core count, and joblib's thread limits
    do not reach them, so every worker process calls this before building a
    model. It only takes effect before TensorFlow's first operation; later
    calls log a line and change nothing.

    Returns
    -------
    int
        The intra-op threads in effect; 0 means TensorFlow's default (one per core).
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if current != threads:
            logger.info("TensorFlow is already initialized with %s intra-op threads; keeping them", current or "default")
        return current
    return threads


def repeatability_warnings():
    """Return one message per setting of this process under which a job's weights may not repeat.

    On the CPU, a job's weights hash repeats for the same job, seed and data,
    and the tests check it with and without recurrent dropout. A GPU breaks
    this, because its kernels sum in another order than the CPU kernels.
    """
    import tensorflow as tf

    messages = []
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        messages.append(
            f"TensorFlow sees {len(gpus)} GPU(s), so weights hashes from this run will not match those of a CPU run, "
            "and rnnjobs checks that identical jobs give identical weights on the CPU only. "
            "Set CUDA_VISIBLE_DEVICES=-1 to train on the CPU"
        )
    return messages


def set_seed(seed):
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's CPU kernels deterministic."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def library_versions():
    """Return the versions of the libraries that decide a model's numbers."""
    import h5py
    import keras
    import numpy
    import tensorflow as tf

    from rnnjobs import __version__

    return {
        "rnnjobs": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "h5py": h5py.__version__,
        "python": platform.python_version(),
    }


def file_record(path):
    """Return the path, size and modification time of a file, by which later changes are detected.

    The time keeps microseconds, so that a file rewritten within the same
    second with the same size still counts as changed.
    """
    try:
        stat = os.stat(path)
    except OSError:
        return {"path": path}
    modified = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc)
    return {"path": path, "bytes": stat.st_size, "modified": modified.isoformat(timespec="microseconds")}


def provenance(job, started):
    """Return where an output came from: job file, inputs, libraries, host and times."""
    inputs = [file_record(job["data"]["file"])]
    if job["kind"] == "forecast":
        inputs.append(file_record(job["model_file"]))
    return {
        "job_file": job.get("source"),
        "job_file_sha256": job.get("job_file_sha256"),
        "spec_sha256": job["spec_sha256"],
        "inputs": inputs,
        "versions": library_versions(),
        "host": socket.gethostname(),
        "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
