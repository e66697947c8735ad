"""rnnjobs: batch training and forecasting of RNN time-series models from JSON job files."""

__version__ = "0.1.0"

from rnnjobs.spec import JobError, load_job, load_jobs  # noqa: E402

__all__ = ["JobError", "load_job", "load_jobs", "__version__"]
