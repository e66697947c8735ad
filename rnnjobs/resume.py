"""Resume: decide whether a job's existing output is up to date, so a rerun can skip it.

An output is up to date when it records the same job spec hash as the job and
every input it recorded (data file, model file) still has the same size and
modification time. Model files keep this record in their ``/rnnjobs`` group,
forecast files in their global attributes.
"""

import json
import logging
import os

import h5py

from rnnjobs.data import LOCKING_HINT, DataError
from rnnjobs.runtime import file_record
from rnnjobs.spec import output_path

logger = logging.getLogger(__name__)


def _open_output(path):
    """Open an existing output read-only; a lock held by a writer in another process raises :class:`DataError`."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        if isinstance(err, BlockingIOError) or "lock" in str(err).lower():
            raise DataError(
                f"{path}: cannot check whether this output is up to date, because another process has it open for "
                f"writing ({err}); close it there and run again, or, {LOCKING_HINT}"
            ) from err
        raise


def _recorded(path):
    """Return ``(spec_sha256, provenance)`` stored in an output file, or None if there is none."""
    try:
        with _open_output(path) as h5file:
            attrs = h5file["rnnjobs"].attrs if "rnnjobs" in h5file else h5file.attrs
            spec = attrs.get("spec_sha256")
            provenance = attrs.get("provenance")
            if spec is None or provenance is None:
                return None
            spec = spec.decode() if isinstance(spec, bytes) else str(spec)
            if "rnnjobs" in h5file:
                spec = json.loads(spec)
            return spec, json.loads(provenance)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError):
        return None


def is_up_to_date(job):
    """Return True if the job's output exists and was made from the same spec and inputs.

    The job file's own hash is not compared: a job file edited in whitespace,
    key order or job name only gives the same spec, and its output stays up
    to date. Inputs count as changed when their size or modification time differs.

    Raises
    ------
    DataError
        If another process has the output open for writing, so that HDF5's
        file lock keeps it from being read.
    """
    path = output_path(job)
    if not os.path.exists(path):
        return False
    recorded = _recorded(path)
    if recorded is None:
        logger.info("%s: %s has no record of the job that wrote it; running again", job["name"], path)
        return False
    spec, provenance = recorded
    if spec != job["spec_sha256"]:
        logger.info("%s: the job spec changed since %s was written; running again", job["name"], path)
        return False
    for record in provenance.get("inputs", []):
        if file_record(record["path"]) != record:
            logger.info("%s: input %s changed since %s was written; running again", job["name"], record["path"], path)
            return False
    return True
