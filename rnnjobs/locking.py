"""Output locks: one writer per output file across overlapping runs.

Two cron invocations or two SLURM array tasks may start the same job. Each job
holds an exclusive ``flock`` on a lock file beside its output while it runs, so
the second one either waits for the first or fails at once, as the caller
chooses. The kernel releases the lock when the holder exits, even if it is
killed, so a crashed run never leaves a stale lock.
"""

import errno
import fcntl
import logging
import os
import time

logger = logging.getLogger(__name__)

ON_CONFLICT = ("wait", "fail")


class OutputLockedError(RuntimeError):
    """Another process holds the lock of an output file."""


def lock_path(output):
    """Return the lock file used for ``output``: a hidden file beside it."""
    folder, name = os.path.split(os.path.abspath(output))
    return os.path.join(folder, f".{name}.lock")


class OutputLock:
    """Exclusive lock on an output file, used as a context manager.

    Parameters
    ----------
    output : str
        The file to be written.
    on_conflict : {"wait", "fail"}, default="wait"
        ``wait`` blocks until the other writer finishes (at most ``timeout``
        seconds), ``fail`` raises :class:`OutputLockedError` at once.
    timeout : float, optional
        Seconds to wait with ``on_conflict="wait"``; no limit when None.
    """

    def __init__(self, output, on_conflict="wait", timeout=None):
        if on_conflict not in ON_CONFLICT:
            raise ValueError(f"on_conflict must be one of {ON_CONFLICT}, got {on_conflict!r}")
        self.output = output
        self.path = lock_path(output)
        self.on_conflict = on_conflict
        self.timeout = timeout
        self._descriptor = None

    def acquire(self):
        """Take the lock, waiting or failing as configured."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        announced = False
        try:
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if self.on_conflict == "fail":
                        raise OutputLockedError(
                            f"{self.output}: another run is writing this file (lock {self.path} is held); "
                            "wait for it to finish, or use --on-conflict wait"
                        ) from None
                    if deadline is not None and time.monotonic() >= deadline:
                        raise OutputLockedError(
                            f"{self.output}: timed out after {self.timeout} s waiting for another run "
                            f"to finish writing this file (lock {self.path})"
                        ) from None
                    if not announced:
                        logger.info("%s: another run is writing this file; waiting for it", self.output)
                        announced = True
                    time.sleep(0.2)
                except OSError as err:
                    if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                        raise OutputLockedError(
                            f"{self.output}: the file system does not support locks ({err.strerror}) on "
                            f"{self.path}; write outputs to a local or lock-capable file system"
                        ) from err
                    raise
        except BaseException:
            os.close(descriptor)
            raise
        self._descriptor = descriptor
        return self

    def release(self):
        """Release the lock; the lock file stays, because removing it would race with waiters."""
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
