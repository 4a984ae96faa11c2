"""One pool of worker processes per training process, serving every data layer.

A training process has a train net and test nets, each with its data layers; a pool per layer
(torch's DataLoader) would start N workers for each and leave most of them idle.  Here one set of
`workers` processes takes tasks "batch k of stream s" from every layer.  Each layer (`Stream`)
keeps `prefetch` of its batches requested ahead and receives them in order; a stream's batch k
depends only on its BatchMaker and k (replicate.data.loader), so the pool changes nothing in what
a layer delivers.

The workers are forked when the first batch is asked for, after every stream is registered (they
inherit the makers; a maker's source drops its parent's file handles in the child), and set to one
torch thread each.  Their lifetime is their parent's business: they ignore the signals a terminal
or a scheduler sends to every process of a job (SIGINT, SIGHUP, SIGTERM, SIGUSR2), so that the
training process can finish its iteration and snapshot with their batches (replicate.solver.requests);
they are killed by `close()` and, should the parent die without it, by the kernel (PR_SET_PDEATHSIG).  Tensors come back through shared memory (torch.multiprocessing's queues).  A
worker's error reaches the layer that asked as the same error; a worker that dies is reported.
"""

from __future__ import annotations

import os
import queue
import signal
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp

from replicate.data.signals import die_with_parent
from replicate.errors import ReplicateError

#: What a worker does with batch k of a stream: `maker -> k -> picklable result`.
Job = Callable[[Any, int], Any]


def _detach_from_signals() -> None:
    """In a worker: leave the job's signals to the parent (see the module doc), and die with it."""
    for name in ("SIGINT", "SIGHUP", "SIGTERM", "SIGUSR2"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    die_with_parent()


def _work(jobs: list[tuple[Any, Job]], tasks: Any, results: Any) -> None:
    _detach_from_signals()
    torch.set_num_threads(1)
    for maker, _ in jobs:
        maker.source.reopen()
    while True:
        task = tasks.get()
        if task is None:
            return
        stream, k = task
        maker, job = jobs[stream]
        try:
            results.put((stream, k, True, job(maker, k)))
        except ReplicateError as err:
            results.put((stream, k, False, str(err)))
        except Exception:  # noqa: BLE001  (a bug: the layer gets the worker's traceback)
            results.put((stream, k, False, f"data worker failed:\n{traceback.format_exc()}"))


class DataPool:
    """`workers` processes computing batches for every registered stream (see the module doc)."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.workers = workers
        self._jobs: list[tuple[Any, Job]] = []
        self._processes: list[Any] = []
        self._tasks: Any = None
        self._results: Any = None
        self._ready: dict[tuple[int, int], tuple[bool, Any]] = {}
        #: Counts the times the workers were stopped: streams then ask again for what they had asked.
        self.generation = 0

    def register(self, maker: Any, job: Job) -> int:
        """A new stream; returns its number.  Workers already running are stopped (forked, they
        do not know the new maker) and restart at the next request."""
        self.close()
        self._jobs.append((maker, job))
        return len(self._jobs) - 1

    def _start(self) -> None:
        context = mp.get_context("fork")
        self._tasks, self._results = context.SimpleQueue(), context.Queue()
        for _ in range(self.workers):
            process = context.Process(target=_work, args=(self._jobs, self._tasks, self._results), daemon=True)
            process.start()
            self._processes.append(process)

    def request(self, stream: int, k: int) -> None:
        if not self._processes:
            self._start()
        self._tasks.put((stream, k))

    def get(self, stream: int, k: int) -> Any:
        """Batch k of `stream` (requested before), waiting for it; other streams' results that
        arrive meanwhile are kept for them."""
        while (stream, k) not in self._ready:
            try:
                s, j, ok, value = self._results.get(timeout=5.0)
            except queue.Empty:
                dead = [p for p in self._processes if not p.is_alive()]
                if dead:
                    raise ReplicateError(f"a data worker process died (exit code {dead[0].exitcode})") from None
                continue
            self._ready[(s, j)] = (ok, value)
        ok, value = self._ready.pop((stream, k))
        if not ok:
            raise ReplicateError(value)
        return value

    def close(self) -> None:
        """Stop the workers (a later request starts new ones).  SIGKILL: they ignore SIGTERM and
        hold nothing that needs cleaning up."""
        if not self._processes:
            return
        for process in self._processes:
            process.kill()
        for process in self._processes:
            process.join()
        self._results.close()
        self._results.join_thread()
        self._tasks.close()
        self._processes, self._ready = [], {}
        self.generation += 1


class Stream:
    """One data layer's batches first, first + 1, ... from the pool, `prefetch` requested ahead."""

    def __init__(self, pool: DataPool, maker: Any, job: Job, prefetch: int, first: int = 0):
        self.pool = pool
        self.id = pool.register(maker, job)
        self.prefetch = max(1, prefetch)
        self.next_batch = first
        self._requested = first
        self._generation = pool.generation

    def __next__(self) -> Any:
        if self._generation != self.pool.generation:  # the workers were restarted: ask again
            self._requested, self._generation = self.next_batch, self.pool.generation
        while self._requested < self.next_batch + self.prefetch:
            self.pool.request(self.id, self._requested)
            self._requested += 1
        value = self.pool.get(self.id, self.next_batch)
        self.next_batch += 1
        return value


def workers_per_process(local_world: int | None = None) -> int:
    """Data workers for each training process of this machine: the CPUs this process may use
    (replicate.data.cpus), shared by the processes of a data-parallel run here, less one for the
    process itself."""
    from replicate.data.cpus import available_cpus

    world = local_world or int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, available_cpus() // max(1, world) - 1)
