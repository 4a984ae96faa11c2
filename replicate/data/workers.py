"""Worker processes for long data jobs (decoding a store, means) that a signal cannot hang.

multiprocessing.Pool lets its workers share one locked task queue.  A worker killed while it waits
on that queue (SLURM's scancel and time limit signal every process of a job) holds the lock for
ever, and Pool.terminate() then waits for it for ever: a stopped `data prepare` hung instead of
saving its work.  Here each worker has a pipe of its own and nothing is shared: the parent ends
the workers with SIGKILL, and whatever happens to one worker, the parent stops or goes on at once.
Workers are spawned (no fork of a parent holding threads and open files), ignore SIGINT and
SIGTERM (the parent stops the job and keeps what is done: replicate.data.signals), and die with
their parent.  The parent receives each result whole (signals held meanwhile), so a Ctrl-C never
leaves half a message in a pipe, and waits in slices of WAKE_S (replicate.data.signals): Linux may
give a signal to any thread of the process (numpy's OpenBLAS threads among them), and Python runs
its handler only once the main thread is back in the interpreter, which an untimed wait on a
stalled worker never is.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from replicate.data.signals import WAKE_S, die_with_parent, held_signals
from replicate.errors import ReplicateError


def _serve(conn: multiprocessing.connection.Connection, initializer: Callable[..., None] | None,
           initargs: tuple) -> None:
    """A worker: run (function, job) tasks until the parent kills it or closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            function, job = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", function(job)))
        except ReplicateError as err:
            conn.send(("error", str(err)))
        except Exception:  # noqa: BLE001  (a bug: the parent shows the worker's traceback)
            conn.send(("bug", traceback.format_exc()))


class Workers:
    """`count` spawned worker processes (see the module doc); `initializer(*initargs)` runs in each."""

    def __init__(self, count: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()):
        context = multiprocessing.get_context("spawn")
        self._processes, self._conns = [], []
        try:
            for _ in range(count):
                mine, theirs = context.Pipe()
                process = context.Process(target=_serve, args=(theirs, initializer, initargs), daemon=True)
                process.start()
                theirs.close()
                self._processes.append(process)
                self._conns.append(mine)
        except BaseException:
            self.close()
            raise

    def _take(self, worker: int) -> Any:
        """The next result of `worker` (it is there, or being written), received whole."""
        with held_signals():
            try:
                kind, value = self._conns[worker].recv()
            except (EOFError, OSError):
                code = self._processes[worker].exitcode
                raise ReplicateError(f"a data worker died (exit code {code}; out of memory?)") from None
        if kind == "ok":
            return value
        if kind == "error":
            raise ReplicateError(value)
        raise RuntimeError(f"data worker failed:\n{value}")

    def _give(self, worker: int, function: Callable[[Any], Any], job: Any) -> None:
        with held_signals():
            self._conns[worker].send((function, job))

    def ordered(self, function: Callable[[Any], Any], jobs: Iterable[Any], depth: int = 2) -> Ordered:
        """`function` over `jobs`, results in the jobs' order, `depth` jobs ahead per worker."""
        return Ordered(self, function, jobs, depth)

    def unordered(self, function: Callable[[Any], Any], jobs: list[Any], wait: float) -> Iterator[Any]:
        """`function` over `jobs`, each result as soon as a worker has it; None whenever `wait`
        seconds pass without one (for a progress report)."""
        pending = list(reversed(jobs))
        busy: dict[multiprocessing.connection.Connection, int] = {}
        for worker in range(len(self._conns)):
            if pending:
                self._give(worker, function, pending.pop())
                busy[self._conns[worker]] = worker
        while busy:
            ready = multiprocessing.connection.wait(list(busy), wait)
            if not ready:
                yield None
            for conn in ready:
                worker = busy.pop(conn)
                result = self._take(worker)
                if pending:
                    self._give(worker, function, pending.pop())
                    busy[conn] = worker
                yield result

    def close(self) -> None:
        """Kill the workers (SIGKILL: they ignore the others) and reap them."""
        for process in self._processes:
            if process.is_alive():
                process.kill()
            process.join()
        for conn in self._conns:
            conn.close()
        self._processes, self._conns = [], []


class Ordered:
    """Results of jobs given to the workers in turn (job j to worker j mod n), taken in order."""

    def __init__(self, workers: Workers, function: Callable[[Any], Any], jobs: Iterable[Any], depth: int):
        self._workers, self._function, self._jobs = workers, function, iter(jobs)
        self._count = len(workers._conns)
        self._given = self._taken = 0
        for _ in range(depth * self._count):
            self._give_next()

    def _give_next(self) -> None:
        job = next(self._jobs, None)
        if job is not None:
            self._workers._give(self._given % self._count, self._function, job)
            self._given += 1

    def __iter__(self) -> Ordered:
        return self

    def __next__(self) -> Any:
        if self._taken == self._given:
            raise StopIteration
        worker = self._taken % self._count
        while not self._workers._conns[worker].poll(WAKE_S):  # see the module doc
            pass
        result = self._workers._take(worker)
        self._taken += 1
        self._give_next()
        return result

    def ready(self) -> Iterator[Any]:
        """The results already there, in order, without waiting for more."""
        while self._taken < self._given and self._workers._conns[self._taken % self._count].poll(0):
            result = self._workers._take(self._taken % self._count)
            self._taken += 1
            yield result
