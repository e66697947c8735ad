"""Interruption by SIGTERM and SIGINT: start no new job, cancel the running ones, write no partial output.

Batch systems stop a job with SIGTERM, and kill it with SIGKILL a grace
period later (SLURM's ``KillWait``, 30 s by default). A terminal sends SIGINT
on Ctrl-C. While :func:`handling_signals` is active, the first such signal is
recorded. Code inside :func:`cancellable` in the main thread then gets
:class:`JobCancelled` raised at its next Python instruction, so ``with``
blocks such as :func:`rnnjobs.output.atomic_output` remove their temporary
files on the way out. Elsewhere the signal is only recorded, and the runner
checks :func:`received` before it starts each job.
"""

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class JobCancelled(BaseException):
    """A job was stopped by a signal.

    It derives from BaseException, like KeyboardInterrupt, so that the
    ``except Exception`` blocks that report a job's failure let it through.
    """

    def __init__(self, signum):
        self.signum = signum
        super().__init__(f"stopped by {signal_name(signum)}")


class _State:
    def __init__(self):
        self.signum = None
        self.count = 0
        self.in_job = False
        self.raised = False


_state = _State()


def signal_name(signum):
    """Return the name of a signal number, such as ``"SIGTERM"``; a name is returned as it is."""
    if isinstance(signum, str):
        return signum
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_status(signum):
    """Return the exit status a shell reports for a process ended by ``signum`` (a number or a name): 128 plus its number."""
    if isinstance(signum, str):
        signum = signal.Signals[signum]
    return 128 + int(signum)


def _handle(signum, frame):
    _state.count += 1
    if _state.signum is None:
        _state.signum = signum
    # Raise once only: a second signal, such as SLURM's SIGTERM to every process
    # after the parent forwarded its own, must not interrupt the clean-up.
    if _state.in_job and not _state.raised:
        _state.raised = True
        raise JobCancelled(signum)


def received():
    """Return the first signal received since the handlers were installed, or None."""
    return _state.signum


def signal_count():
    """Return how many SIGTERM and SIGINT signals arrived since the handlers were installed."""
    return _state.count


def _install():
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    _state.__init__()
    return previous


@contextlib.contextmanager
def handling_signals():
    """Record SIGTERM and SIGINT while the block runs, then restore the previous handlers and forget the signal.

    Outside the main thread, where Python cannot install signal handlers, the
    block runs with the handlers as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = _install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.__init__()


def install_in_worker():
    """Install the handlers for the life of a worker process; do nothing if they are installed or off the main thread."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is not _handle:
        _install()


@contextlib.contextmanager
def cancellable():
    """Let a signal raise :class:`JobCancelled` inside the block, when it runs in the main thread.

    Raises
    ------
    JobCancelled
        At once, if a signal arrived before the block.
    """
    if _state.signum is not None:
        raise JobCancelled(_state.signum)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.in_job = True
    try:
        yield
    finally:
        _state.in_job = False
