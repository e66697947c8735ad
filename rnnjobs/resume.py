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

from rnnjobs.runtime import file_record
from rnnjobs.spec import output_path

logger = logging.getLogger(__name__)


def _recorded(path):
    """Return ``(spec_sha256, provenance)`` stored in an output file, or None if there is none."""
    try:
        with h5py.File(path, "r") as h5file:
            attrs = h5file["rnnjobs"].attrs if "rnnjobs" in h5file else h5file.attrs
            spec = attrs.get("spec_sha256")
            provenance = attrs.get("provenance")
            if spec is None or provenance is None:
                return None
            spec = spec.decode() if isinstance(spec, bytes) else str(spec)
            if "rnnjobs" in h5file:
                spec = json.loads(spec)
            return spec, json.loads(provenance)
    except (OSError, KeyError, ValueError, TypeError):
        return None


def is_up_to_date(job):
    """Return True if the job's output exists and was made from the same spec and inputs."""
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
