"""Output locks across real processes."""

import multiprocessing

import pytest

from rnnjobs.locking import OutputLock, OutputLockedError, lock_path


def hold_lock(output, ready, release):
    with OutputLock(output):
        ready.set()
        release.wait(30)


def start_holder(output):
    """Start a process that holds the lock of ``output``; return it and the event that releases it."""
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=hold_lock, args=(output, ready, release))
    holder.start()
    assert ready.wait(30)
    return holder, release


@pytest.fixture
def held_lock(tmp_path):
    """Hold the lock of ``out.nc`` in another process until the test ends."""
    output = str(tmp_path / "out.nc")
    holder, release = start_holder(output)
    yield output, release
    release.set()
    holder.join(30)


def test_second_writer_fails_at_once(held_lock):
    output, _ = held_lock

    with pytest.raises(OutputLockedError, match="another run is writing this file"):
        OutputLock(output, on_conflict="fail").acquire()


def test_second_writer_times_out(held_lock):
    output, _ = held_lock

    with pytest.raises(OutputLockedError, match="timed out after 0.5 s"):
        OutputLock(output, on_conflict="wait", timeout=0.5).acquire()


def test_second_writer_waits_for_first(held_lock):
    output, release = held_lock
    release.set()

    with OutputLock(output, on_conflict="wait", timeout=30) as lock:
        assert lock.path == lock_path(output)


def test_lock_is_released_when_holder_dies(tmp_path):
    output = str(tmp_path / "out.nc")
    holder, _ = start_holder(output)

    holder.kill()
    holder.join(30)

    with OutputLock(output, on_conflict="fail") as lock:
        assert lock.path == lock_path(output)
