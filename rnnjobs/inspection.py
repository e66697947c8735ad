"""Inspection: human-readable descriptions of jobs, models and output files."""

import io

from rnnjobs.data import check_sample_datasets, get_dataset, open_hdf5


def job_architecture(job):
    """Return the architecture a job trains or forecasts with, reading only shapes and metadata."""
    if job["kind"] == "forecast":
        from rnnjobs.modelfile import read_model_metadata

        metadata = read_model_metadata(job["model_file"])
        return metadata["architecture"], metadata["shapes"]
    data = job["data"]
    if data.get("layout") == "samples":
        with open_hdf5(data["file"]) as h5file:
            x_dataset, y_dataset = get_dataset(h5file, data["x"]), get_dataset(h5file, data.get("y", "y"))
            feature_names, target_names = check_sample_datasets(x_dataset, y_dataset, data)
        n_features, n_targets = len(feature_names), len(target_names)
    else:
        n_features, n_targets = len(data["features"]), len(data["targets"])
    from rnnjobs.training import architecture_of

    return architecture_of(job, n_features, n_targets), job["shapes"]


def describe_job(job):
    """Return the summaries of a job's training and prediction models and their parameter counts."""
    from rnnjobs import models

    architecture, shapes = job_architecture(job)
    training = models.build_training_model(architecture, shapes["batch_size"], shapes["timesteps"], shapes["stateful"])
    prediction = models.build_prediction_model(architecture)
    out = io.StringIO()
    for model in (training, prediction):
        model.summary(print_fn=lambda line, *args, **kwargs: out.write(line + "\n"))
    counts = models.count_trainable(training), models.count_trainable(prediction)
    out.write(f"trainable parameters: training model {counts[0]}, prediction model {counts[1]}")
    out.write(" (equal)\n" if counts[0] == counts[1] else " (DIFFERENT: the weights cannot be shared)\n")
    return out.getvalue()
