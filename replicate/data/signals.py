"""Stopping long data jobs cleanly: SIGINT and SIGTERM stop the parent, never its workers.

A terminal's Ctrl-C (SIGINT) reaches every process of the foreground group, and SLURM's scancel or
time limit sends SIGTERM to every process of the job.  Each worker of a pool that let SIGINT
through printed its own KeyboardInterrupt traceback; and SIGTERM, unhandled, killed the parent
before it could save what it had.  So: workers ignore both and die with their parent
(replicate.data.workers, replicate.data.pool); the parent turns SIGTERM into the same
`KeyboardInterrupt` as Ctrl-C (`stop_on_signals`), keeps what is done, says how to resume in one
line, and ends its workers; a step that must not be cut in two holds the signals until it is done
(`held_signals`).

Linux gives a signal sent to a process to any of its threads that does not block it, not always
the main one; Python then runs the handler in the main thread only once that thread is back in
the interpreter.  A main thread in an untimed wait (a pipe's poll, a queue's get) for something
that may never come (a worker stalled on a dead file server) would sleep through Ctrl-C.  Such
waits come back every WAKE_S seconds instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Iterator

_PR_SET_PDEATHSIG = 1
#: The longest the main thread waits without coming back to the interpreter (see the module doc).
WAKE_S = 0.5


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the parent; `name` says which."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def die_with_parent() -> None:
    """In a child: have the kernel kill it when its parent dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (AttributeError, OSError):  # not Linux: the parent's own cleanup still stops it
        pass


def _raise(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Stopped` (a KeyboardInterrupt) in the main
    thread; the previous handlers come back after it.  Elsewhere than the main thread, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM wait: a step that must not be cut in two (records
    appended with their index rows, a flush) finishes first, then the signal is delivered as
    usual.  Elsewhere than the main thread, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])
