"""Pipes from a pool's workers to a stream's consumer, which a worker's death cannot hang.

A multiprocessing queue that several workers write has one pipe and one write lock.  A worker
killed in the middle of a message (by a pool's restart, or by the out-of-memory killer while it
sends a large batch) leaves half a message in the pipe and the lock taken: the consumer, told
that data is there, waits in `recv` for the rest for ever, and the other workers for the lock.
Here each worker has a pipe of its own per stream, which only it writes (the parent and the other
workers close their copies of its write end), and the consumer never blocks on one: it reads what
is there and hands out whole messages only.  A worker's death ends its pipes (end of file); should
a process it forked keep them open, the consumer asks the kernel (waitpid) whenever a wait finds
nothing, as multiprocessing's queue users must.

A message travels as its length (8 bytes) and its pickle, made with multiprocessing's
ForkingPickler, which carries torch's reductions: a tensor travels in shared memory, whose file the
consumer fetches from its sender as it unpickles.  A message whose sender is gone by then is lost
with it, and reported as the sender's death; one that cannot be rebuilt for another reason (out of
file descriptors) breaks the inbox: every later `receive` raises the same error, never a wait.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import threading
import time
import weakref
from multiprocessing.connection import wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

from replicate.errors import ReplicateError

_LENGTH = struct.Struct("<Q")
#: Bytes read from a pipe at once (a pipe holds 64 KiB; a pickled batch is tens of MB).
_CHUNK = 1 << 20


class Outbox:
    """In a worker: messages down one pipe, written by a thread of the worker's own, so that the
    worker goes on computing while a consumer that is not reading now (a test net's stream during
    training steps) holds a large message up."""

    def __init__(self, fd: int):
        self._fd = fd
        self._queue: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        threading.Thread(target=self._write, daemon=True).start()

    def put(self, message: Any) -> None:
        """Send `message` (pickled here, so that an unpicklable one raises in the caller)."""
        data = memoryview(ForkingPickler.dumps(message))
        self._queue.put(memoryview(_LENGTH.pack(data.nbytes)))
        self._queue.put(data)

    def _write(self) -> None:
        while True:
            view = self._queue.get()
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except BrokenPipeError:  # the consumer's process is exiting: nobody to tell
                return


class Inbox:
    """In the consumer: the whole messages that the workers' pipes for one stream brought (`fds`,
    one per worker of `processes`), read without ever blocking on a pipe.  The read ends are
    closed with the inbox, after its last reader is done with it."""

    def __init__(self, fds: list[int], processes: list[Any]):
        self._processes = processes
        self._fds = dict(zip(fds, range(len(fds))))
        self._pending = {fd: bytearray() for fd in fds}
        self._ready: list[Any] = []
        #: Workers whose pipe ended or whose process exited: no more messages come from them.
        self.gone: set[int] = set()
        self._broken: ReplicateError | None = None
        # Not at exit: workers still running then (a pool never closed) are killed first, and
        # would otherwise write into closed pipes meanwhile.
        weakref.finalize(self, _close, self._fds).atexit = False

    def receive(self, timeout: float) -> list[Any]:
        """The messages that are whole within `timeout` seconds (none: an empty list), at once
        when a worker's pipe ends; once one could not be rebuilt, those before it, then its error."""
        if self._broken is None:
            ready = wait(list(self._fds), timeout)
            for fd in ready:
                if self._broken is None:
                    self._read(fd)
            if not ready:
                self._reap()
        messages, self._ready = self._ready, []
        if not messages and self._broken is not None:
            raise self._broken
        return messages

    def exit_code(self) -> int | None:
        """The exit code of the first worker that is gone (its pipe may end a moment before the
        kernel has its exit status: waited for up to a second; None if still not known)."""
        return _exit_code(self._processes[min(self.gone)], 1.0) if self.gone else None

    def _reap(self) -> None:
        """Workers the kernel says have exited: a process a worker forked may hold its pipes open,
        so that no end of file comes.  What they sent before is taken first."""
        for fd, worker in list(self._fds.items()):
            if self._processes[worker].exitcode is not None:
                while fd in self._fds and wait([fd], 0):
                    self._read(fd)
                self.gone.add(worker)

    def _read(self, fd: int) -> None:
        chunk = os.read(fd, _CHUNK)
        if not chunk:  # every copy of the write end is closed: the worker is gone
            self.gone.add(self._fds.pop(fd))
            del self._pending[fd]
            os.close(fd)
            return
        pending = self._pending[fd]
        pending += chunk
        while len(pending) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(pending)
            end = _LENGTH.size + length
            if len(pending) < end:
                break
            view = memoryview(pending)
            try:
                self._ready.append(pickle.loads(view[_LENGTH.size:end]))
            except Exception as err:
                # A tensor of the message is fetched from its sender, which must still be there:
                # a worker killed after sending (a restart, the out-of-memory killer) leaves a
                # whole message that cannot be rebuilt.  It goes with its worker.
                worker = self._fds[fd]
                if _exit_code(self._processes[worker], 1.0) is None:
                    self._broken = ReplicateError(f"a batch from a data worker could not be received: {err!r}")
                    return
                self.gone.add(worker)
            finally:
                view.release()
                del pending[:end]


def _exit_code(process: Any, timeout: float) -> int | None:
    """`process`'s exit code, asking the kernel for up to `timeout` seconds (None: still running)."""
    waited = 0.0
    while process.exitcode is None and waited < timeout:
        time.sleep(0.01)
        waited += 0.01
    return process.exitcode


def _close(fds: dict[int, int]) -> None:
    for fd in fds:
        os.close(fd)
