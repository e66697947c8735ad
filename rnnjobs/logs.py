"""Log set-up for batch systems: timestamped lines on stderr, as text or as JSON, tagged with the job name."""

import contextlib
import contextvars
import datetime
import json
import logging
import sys

LOG_FORMATS = ("text", "json")

_current_job = contextvars.ContextVar("rnnjobs_current_job", default=None)


def _timestamp(record):
    """Return the record's time as ISO 8601 with milliseconds and the UTC offset of this host."""
    moment = datetime.datetime.fromtimestamp(record.created).astimezone()
    return moment.isoformat(timespec="milliseconds")


class _JobFilter(logging.Filter):
    """Set ``record.job``, unless the call gave it with ``extra``, to the name of the job this thread runs, or None."""

    def filter(self, record):
        if getattr(record, "job", None) is None:
            record.job = _current_job.get()
        return True


class TextFormatter(logging.Formatter):
    """Format a record as ``TIME LEVEL MESSAGE``, with TIME in ISO 8601."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def formatTime(self, record, datefmt=None):
        return _timestamp(record)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line for log collectors.

    Keys: ``time`` (ISO 8601), ``level``, ``logger``, ``pid``, ``job`` (when
    the line belongs to a job), ``message``, and ``exception`` with the
    traceback when there is one.
    """

    def format(self, record):
        entry = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
        }
        job = getattr(record, "job", None)
        if job is not None:
            entry["job"] = job
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level=logging.INFO, log_format="text", stream=None):
    """Send all log records of ``level`` and above to ``stream`` (stderr by default), replacing other handlers.

    Parameters
    ----------
    level : int, default=logging.INFO
    log_format : {"text", "json"}, default="text"
        ``text``: ``TIME LEVEL MESSAGE`` lines; ``json``: one JSON object per
        line, see :class:`JsonFormatter`.
    stream : file-like, optional
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format: got {log_format!r}, expected one of {', '.join(map(repr, LOG_FORMATS))}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_JobFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)


def current_format():
    """Return ``"json"`` if the root logger's handlers write JSON lines, else ``"text"``."""
    handlers = logging.getLogger().handlers
    return "json" if any(isinstance(handler.formatter, JsonFormatter) for handler in handlers) else "text"


@contextlib.contextmanager
def job_context(name):
    """Tag the log records of this thread with job ``name`` while the block runs."""
    token = _current_job.set(name)
    try:
        yield
    finally:
        _current_job.reset(token)
