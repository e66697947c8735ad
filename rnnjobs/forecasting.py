"""Forecasting: rebuild the prediction model from a model file and predict for any locations and horizon."""

import logging
import time

import numpy as np

from rnnjobs.data import DataError, SeriesReader
from rnnjobs.scaling import Scaler
from rnnjobs.validation import check_job_against_model, units_mismatches

logger = logging.getLogger(__name__)


class ScaledFeatures:
    """Scaled features of a :class:`rnnjobs.data.SeriesReader`, read when sliced.

    ``features[rows, steps]`` with two slices reads that block and scales it,
    so :func:`predict_series` can take a file as it takes an array.
    """

    def __init__(self, reader, scaler):
        self.reader = reader
        self.scaler = scaler
        self.shape = (reader.n_series, reader.n_times, len(reader.feature_names))

    def __getitem__(self, key):
        rows, steps = key
        features, _ = self.reader.read(rows, steps.start, steps.stop)
        return self.scaler.transform(features)


def predict_series(model, architecture, features, location_chunk, time_chunk, on_chunk, stop=None):
    """Run a state-carrying prediction model over ``features`` in chunks of locations and time.

    Within a location chunk, the final RNN states of one time chunk are the
    initial states of the next, so the result equals one pass over the whole
    series, up to floating-point rounding. Locations never share state, so a
    location's forecast does not depend on which others are in its chunk.
    Memory is set by the chunk sizes: only one chunk of inputs, its RNN
    activations and its predictions exist at a time.

    Parameters
    ----------
    model : keras.Model
        From :func:`rnnjobs.models.build_prediction_model` with ``carry_state=True``.
    architecture : dict
    features : array-like of shape (n_locations, n_times, n_features)
        Scaled inputs: an array, or anything with ``shape`` that returns an
        array for ``features[rows, steps]`` with two slices, such as
        :class:`ScaledFeatures`.
    location_chunk, time_chunk : int
    on_chunk : callable
        Called as ``on_chunk(location_slice, time_slice, predictions)`` for
        every chunk, in time order within each location chunk.
    stop : int, optional
        Predict only the steps before this one; all steps when absent.
    """
    from rnnjobs.models import zero_states

    n_locations, n_times = features.shape[:2]
    if stop is not None:
        n_times = min(n_times, stop)
    for first in range(0, n_locations, location_chunk):
        rows = slice(first, min(first + location_chunk, n_locations))
        states = zero_states(architecture, rows.stop - rows.start)
        for start in range(0, n_times, time_chunk):
            steps = slice(start, min(start + time_chunk, n_times))
            outputs = model.predict_on_batch([np.asarray(features[rows, steps], dtype=np.float32), *states])
            predictions, states = outputs[0], list(outputs[1:])
            on_chunk(rows, steps, np.asarray(predictions))


def bias_offsets(job, metadata, model, features, reader):
    """Return the mean of observed minus forecast per location and target over ``bias_correction.time``.

    The forecast is run up to the end of the correction period, chunk by
    chunk as in the main pass, and compared with the valid observations there.
    Locations without a valid observation in the period get an offset of 0.

    Returns
    -------
    offsets : ndarray of shape (n_locations, n_targets), float32
    counts : ndarray of shape (n_locations, n_targets), int
        Valid observations behind each offset.
    """
    correction = job["bias_correction"]
    target_names = metadata["target_names"]
    observed = correction.get("observed") or target_names
    if len(observed) != len(target_names):
        raise DataError(
            f"{job['source']}: bias_correction.observed: expected {len(target_names)} dataset(s), one per target "
            f"({', '.join(target_names)}), got {len(observed)}"
        )
    spec = dict(job["data"], time=dict(correction["time"]), valid_range={**job["data"]["valid_range"], **correction.get("valid_range", {})})
    first = correction["time"]["start"] - reader.time_start
    last = correction["time"]["stop"] - reader.time_start
    target_scaler = Scaler.from_dict(metadata["scalers"]["targets"])
    n_targets = len(target_names)
    sums = np.zeros((reader.n_series, n_targets))
    counts = np.zeros((reader.n_series, n_targets), dtype=np.int64)

    with SeriesReader(spec, reader.feature_names[: len(reader.feature_names) - len(metadata.get("static_features", []))], target_names=observed) as observations:

        def compare(rows, steps, predictions):
            overlap_start, overlap_stop = max(steps.start, first), min(steps.stop, last)
            if overlap_start >= overlap_stop:
                return
            _, values = observations.read(rows, overlap_start - first, overlap_stop - first)
            forecast = target_scaler.inverse_transform(predictions[:, overlap_start - steps.start : overlap_stop - steps.start])
            valid = np.isfinite(values)
            sums[rows] += np.where(valid, values - forecast, 0.0).sum(axis=1)
            counts[rows] += valid.sum(axis=1)

        predict_series(model, metadata["architecture"], features, job["chunks"]["locations"], job["chunks"]["time"], compare, stop=last)

    offsets = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32)
    return offsets, counts


def forecast_job(job):
    """Run a normalized forecast job and write its netCDF-compatible output file.

    The input is read one chunk of ``chunks.locations`` x ``chunks.time`` at
    a time, and each chunk's forecast is written as soon as it is made.

    Returns
    -------
    dict
        ``name``, ``output``, ``locations``, ``times`` and ``seconds``.

    Raises
    ------
    DataError
        If the model file or the input data does not fit the job, or an input
        value is invalid; nothing is written. Input values are checked as
        their chunk is read, so an invalid one stops the job part way through.
    """
    from rnnjobs import models
    from rnnjobs.modelfile import load_model_weights, read_model_metadata

    started = time.time()
    metadata = read_model_metadata(job["model_file"])
    feature_names, static_names = check_job_against_model(job, metadata)
    architecture = metadata["architecture"]
    model = models.build_prediction_model(architecture, carry_state=True)
    load_model_weights(model, job["model_file"], metadata)

    with SeriesReader(job["data"], feature_names, static_names=static_names) as reader:
        return _forecast_from_reader(job, metadata, model, reader, started)


def _forecast_from_reader(job, metadata, model, reader, started):
    """Forecast every chunk of ``reader`` and write the output file; see :func:`forecast_job`."""
    from rnnjobs.output import ForecastWriter, atomic_output
    from rnnjobs.runtime import provenance

    architecture = metadata["architecture"]
    spinup = job["spinup"]
    n_locations, n_times = reader.n_series, reader.n_times
    for message in units_mismatches(reader.units, metadata.get("units", {})):
        logger.warning("%s: %s", job["name"], message)
    if spinup >= n_times:
        raise DataError(f"{job['source']}: spinup: {spinup} steps leave nothing of the {n_times} input steps to forecast")
    features = ScaledFeatures(reader, Scaler.from_dict(metadata["scalers"]["features"]))
    target_scaler = Scaler.from_dict(metadata["scalers"]["targets"])

    target_names = metadata["target_names"]
    attributes = {
        "title": f"rnnjobs forecast of {', '.join(target_names)}",
        "source": "rnnjobs forecast",
        "model_file": metadata["path"],
        "model_weights_sha256": metadata["weights_sha256"],
        "input_file": reader.file,
        "spinup_steps": spinup,
        "spec_sha256": job["spec_sha256"],
        "job": {key: value for key, value in job.items() if key != "source"},
    }
    chunks = job["chunks"]
    bad_chunks = []
    offsets = None
    if job.get("bias_correction"):
        offsets, counts = bias_offsets(job, metadata, model, features, reader)
        uncorrected = int((counts == 0).any(axis=1).sum())
        attributes["bias_correction"] = dict(job["bias_correction"], locations_without_observations=uncorrected)
        logger.info(
            "%s: bias correction from %d observation(s); %d location(s) without a valid observation keep their raw forecast",
            job["name"], int(counts.sum()), uncorrected,
        )

    with atomic_output(job["output"]["file"]) as temporary:
        with ForecastWriter(
            temporary,
            reader.location_dim,
            reader.location_ids,
            reader.time_values[spinup:],
            reader.time_attrs,
            target_names,
            metadata.get("units", {}),
            attributes,
        ) as writer:

            def write_chunk(rows, steps, predictions):
                keep_from = max(spinup - steps.start, 0)
                if keep_from >= predictions.shape[1]:
                    return
                values = target_scaler.inverse_transform(predictions[:, keep_from:])
                if offsets is not None:
                    values = values + offsets[rows][:, None, :]
                if not np.isfinite(values).all():
                    bad_chunks.append((rows.start, steps.start + keep_from))
                out_steps = slice(steps.start + keep_from - spinup, steps.stop - spinup)
                writer.write(rows, out_steps, values)

            predict_series(model, architecture, features, chunks["locations"], chunks["time"], write_chunk)
            if bad_chunks:
                raise DataError(
                    f"{job['source']}: the forecast has non-finite values, first in the chunk at location "
                    f"index {bad_chunks[0][0]}, time index {bad_chunks[0][1]}; no output was written"
                )
            if offsets is not None:
                for k, name in enumerate(target_names):
                    writer.write_location_variable(
                        f"{name}_bias_correction",
                        offsets[:, k],
                        {"long_name": f"offset added to the forecast of {name}: mean observed minus forecast", **({"units": metadata["units"][name]} if name in metadata.get("units", {}) else {})},
                    )
            if reader.filled_features:
                logger.info("%s: filled %d missing feature value(s) with policy %r", job["name"], reader.filled_features, job["data"]["missing_features"])
            writer.write_attributes({"provenance": provenance(job, started)})

    seconds = time.time() - started
    logger.info("%s: wrote %s (%d locations x %d steps)", job["name"], job["output"]["file"], n_locations, n_times - spinup)
    return {
        "name": job["name"],
        "kind": "forecast",
        "output": job["output"]["file"],
        "locations": n_locations,
        "times": n_times - spinup,
        "seconds": seconds,
    }
