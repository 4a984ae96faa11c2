"""One pool of worker processes per training process, serving every data layer.

A training process has a train net and test nets, each with its data layers; a pool per layer
(torch's DataLoader) would start N workers for each and leave most of them idle.  Here one set of
`workers` processes takes tasks "batch k of stream s" from every layer.  Each layer (`Stream`)
keeps `prefetch` of its batches requested ahead and receives them in order; a stream's batch k
depends only on its BatchMaker and k (replicate.data.loader), so the pool changes nothing in what
a layer delivers.

Batches come back in place (replicate.data.slots): each stream has `prefetch + HELD` slots of
shared memory mapped before the workers fork; a task names a free slot, the worker writes the batch
into it (the stream's `Job`), and only a small description travels back, through a pipe of the
worker's own for that stream (replicate.data.pipes: a worker killed mid-message cannot hang its
consumer).  The layer gets tensors that view the slot, which is free again once they are all gone.
When no slot is free (a consumer that keeps many batches) or a batch does not fit its slot, the
batch travels pickled (its tensors through torch.multiprocessing's shared memory) instead: slower,
the same values.  A stream's pipes are read only by whoever consumes the stream (the training
thread, or a GPU loader's thread), so streams never wait for one another.

The workers are forked when the first batch is asked for, after every stream is registered (they
inherit the makers; a maker's source drops its parent's file handles in the child), and set to one
torch thread each.  Their lifetime is their parent's business: they ignore the signals a terminal
or a scheduler sends to every process of a job (SIGINT, SIGHUP, SIGTERM, SIGUSR2), so that the
training process can finish its iteration and snapshot with their batches (replicate.solver.requests);
they are killed by `close()` and, should the parent die without it, by the kernel
(PR_SET_PDEATHSIG, which names the thread that forked: the pool forks from a thread of its own that
lives as long as the workers).  A worker's error reaches the layer that asked as the same error; a
worker that dies is reported.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import traceback
from multiprocessing import util
from typing import Any, Protocol

import numpy as np
import torch
import torch.multiprocessing as mp

from replicate.data.pipes import Inbox, Outbox
from replicate.data.signals import die_with_parent
from replicate.data.slots import Slots
from replicate.errors import ReplicateError

#: Batches a consumer may hold besides those requested ahead: the one in use, the one before it
#: (a net keeps its tops until the next forward replaces them) and one on its way to a device.
HELD = 3
#: What `DataPool.get` returns when the workers were restarted while it waited (ask again).
RESTARTED = object()


class Job(Protocol):
    """What the workers do for one stream (replicate.data.loader's WholeBatch and HostRecords)."""

    def slot_bytes(self, maker: Any) -> int:
        """In the training process, before the workers fork: the bytes one batch takes in a slot."""

    def __call__(self, maker: Any, k: int, slot: np.ndarray | None) -> tuple[bool, Any]:
        """In a worker: batch k, written into `slot` when there is one and the batch fits (True,
        and a small picklable description), else (False, the whole batch)."""

    def receive(self, value: Any, slot: np.ndarray | None) -> Any:
        """In the training process: the batch from its description and the slot lent to it, or
        `value` itself when it came whole (`slot` None)."""


def _detach_from_signals() -> None:
    """In a worker: leave the job's signals to the parent (see the module doc), and die with it."""
    for name in ("SIGINT", "SIGHUP", "SIGTERM", "SIGUSR2"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    die_with_parent()


def _work(jobs: list[tuple[Any, Job, int] | None], slots: list[Slots | None], tasks: Any, reads: list[int],
          writes: list[int | None]) -> None:
    _detach_from_signals()
    torch.set_num_threads(1)
    for fd in reads:  # the read ends of this worker's pipes and of earlier workers'
        os.close(fd)
    outboxes = [None if fd is None else Outbox(fd) for fd in writes]
    for registered in jobs:
        if registered is not None:
            registered[0].source.reopen()
    while True:
        stream, k, slot = tasks.get()
        maker, job, _ = jobs[stream]
        try:
            in_slot, value = job(maker, k, None if slot is None else slots[stream].buffer(slot))
            outboxes[stream].put((k, slot, in_slot, value, None))
            continue
        except ReplicateError as err:
            message = (k, slot, False, None, str(err))
        except Exception:  # noqa: BLE001  (a bug, or a batch that cannot be pickled: the layer gets the traceback)
            message = (k, slot, False, None, f"data worker failed:\n{traceback.format_exc()}")
        outboxes[stream].put(message)


class DataPool:
    """`workers` processes computing batches for every registered stream (see the module doc);
    with `pin_memory` the slots are page-locked for copies to a CUDA device."""

    def __init__(self, workers: int, pin_memory: bool = False):
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.workers = workers
        self.pin_memory = pin_memory
        self._jobs: list[tuple[Any, Job, int] | None] = []
        self._processes: list[Any] = []
        self._tasks: Any = None
        #: The thread that forked the workers, and the event that lets it end once they are stopped.
        self._keeper: tuple[threading.Thread, threading.Event] | None = None
        #: Per stream, while the workers run: its inbox, the results read early, its slots.
        self._streams: list[tuple[Inbox, dict[int, tuple], Slots] | None] = []
        self._lock = threading.Lock()
        #: Counts the times the workers were stopped: streams then ask again for what they had asked.
        self.generation = 0
        #: Whether the slots are page-locked (None until the workers start, or without pin_memory).
        self.pinned: bool | None = None
        #: Per stream, its batches received in place (through a slot) and pickled (none was free,
        #: or the batch did not fit); each counted by the stream's own consumer.
        self.delivered: list[dict[str, int]] = []

    def register(self, maker: Any, job: Job, prefetch: int) -> int:
        """A new stream with `prefetch` batches requested ahead; returns its number.  Workers
        already running are stopped (forked, they do not know the new maker) and restart at the
        next request (not before the stream is here: one lock for both)."""
        with self._lock:
            self._stop()
            self._jobs.append((maker, job, prefetch))
            self.delivered.append({"in_place": 0, "pickled": 0})
            return len(self._jobs) - 1

    def release(self, stream: int) -> None:
        """A stream nobody reads any more: later workers get no slots and no pipes for it."""
        self._jobs[stream] = None

    def _start(self) -> None:
        """Fork the workers, from a thread of the pool's own that lives until they are stopped:
        they die with the thread that forked them (PR_SET_PDEATHSIG), and the thread that asks
        first (a loader's) may end sooner."""
        started, keep = threading.Event(), threading.Event()
        failed: list[BaseException] = []

        def keeper() -> None:
            try:
                self._fork()
            except BaseException as err:  # noqa: BLE001  (raised in the thread that asked)
                failed.append(err)
            started.set()
            keep.wait()

        thread = threading.Thread(target=keeper, name="data-pool-workers", daemon=True)
        thread.start()
        started.wait()
        if failed:
            keep.set()
            thread.join()
            raise failed[0]
        self._keeper = (thread, keep)
        if self.pin_memory:  # after the fork: the driver may keep pinned ranges from forked children
            self.pinned = all(state[2].pin() for state in self._streams if state is not None)

    def _fork(self) -> None:
        streams = [j is not None for j in self._jobs]
        layers = sum(streams)  # per worker a pipe each and its sentinel; the write ends while forking
        _make_room_for_files(self.workers * (layers + 1) + layers)
        context = mp.get_context("fork")
        slots = [None if j is None else Slots(j[2] + HELD, j[1].slot_bytes(j[0])) for j in self._jobs]
        tasks = context.SimpleQueue()
        reads: list[list[int]] = [[] for _ in streams]  # per stream, one per worker forked so far
        try:
            for _ in range(self.workers):
                # This worker's pipes, made now: the parent closes their write ends once it has
                # forked, so that later workers do not hold them (the worker's death ends them).
                pipes = [os.pipe() if wanted else None for wanted in streams]
                for stream, pipe in enumerate(pipes):
                    if pipe is not None:
                        reads[stream].append(pipe[0])
                try:
                    process = context.Process(target=_work, daemon=True, args=(
                        self._jobs, slots, tasks, [fd for r in reads for fd in r],
                        [None if pipe is None else pipe[1] for pipe in pipes]))
                    process.start()
                finally:
                    for pipe in pipes:
                        if pipe is not None:
                            os.close(pipe[1])
                self._processes.append(process)
        except BaseException:
            _kill(self._processes)
            self._processes = []
            tasks.close()
            for fd in (fd for r in reads for fd in r):
                os.close(fd)
            raise
        self._tasks = tasks
        self._streams = [None if s is None else (Inbox(r, list(self._processes)), {}, s) for r, s in zip(reads, slots)]
        # At interpreter exit multiprocessing sends its daemon children SIGTERM and joins them;
        # ours ignore SIGTERM, so a pool never closed (a loader left open) would hang the exit.
        # This finalizer runs before that and kills them.
        self._at_exit = util.Finalize(self, _kill, args=(list(self._processes),), exitpriority=10)

    def request(self, stream: int, k: int, generation: int) -> bool:
        """Ask for batch k of `stream` (the workers start at the first request); False when the
        workers were restarted since `generation` (the stream then asks again for all it awaits)."""
        with self._lock:
            if generation != self.generation:
                return False
            if not self._processes:
                self._start()
            slot = self._streams[stream][2].take()
            self._tasks.put((stream, k, slot))
            return True

    def get(self, stream: int, k: int, generation: int) -> Any:
        """Batch k of `stream`, requested in `generation`, waiting for it (results of the stream's
        later batches that arrive first are kept); RESTARTED when the workers were restarted."""
        with self._lock:
            if generation != self.generation:
                return RESTARTED
            inbox, early, slots = self._streams[stream]
        while k not in early:
            for message in inbox.receive(0.5):
                early[message[0]] = message
            if k in early:
                break
            gone = bool(inbox.gone)  # before the generation: close() counts a restart before it kills
            if generation != self.generation:
                return RESTARTED
            if gone:
                code = inbox.exit_code()
                why = "; killed: out of memory?" if code == -signal.SIGKILL else ""
                raise ReplicateError(f"a data worker process died (exit code {code}{why})")
        _, slot, in_slot, value, error = early.pop(k)
        if slot is not None and not in_slot:
            slots.give_back(slot)
        if error is not None:
            raise ReplicateError(error)
        _, job, _ = self._jobs[stream]
        self.delivered[stream]["in_place" if in_slot else "pickled"] += 1
        return job.receive(value, slots.lend(slot) if in_slot else None)

    def close(self) -> None:
        """Stop the workers (a later request starts new ones).  SIGKILL: they ignore SIGTERM and
        hold nothing that needs cleaning up.  The inboxes are left to the garbage collector: a
        consumer thread may still be reading one, until it sees the restart."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if not self._processes:
            return
        # First: a consumer that then sees its workers gone knows it was this restart.
        self.generation += 1
        self._at_exit.cancel()
        _kill(self._processes)
        thread, keep = self._keeper
        keep.set()
        thread.join()
        self._tasks.close()
        for state in self._streams:
            if state is not None:
                state[2].retire()
        self._processes, self._streams = [], []


def _make_room_for_files(needed: int) -> None:
    """Raise this process's soft limit of open files (`ulimit -n`, often 1,024) towards its hard
    limit when `needed` more would not fit: a pool keeps a pipe per worker and stream (127 workers
    on a 128-CPU node, 4 data layers: 635 files).  Where the hard limit is too low, say so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(os.listdir("/proc/self/fd")) + needed + 64
    if wanted <= soft:
        return
    if hard != resource.RLIM_INFINITY and wanted > hard:
        raise ReplicateError(f"the data workers need {needed} more open files than this process may have "
                             f"(ulimit -n: {soft}, at most {hard}): use fewer data workers (--data-workers)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _kill(processes: list[Any]) -> None:
    """SIGKILL the workers still running, then reap them all (a reaped one is left alone: its pid
    may already belong to another process)."""
    for process in processes:
        if process.exitcode is None:
            process.kill()
    for process in processes:
        process.join()


class Stream:
    """One data layer's batches first, first + 1, ... from the pool, `prefetch` requested ahead."""

    def __init__(self, pool: DataPool, maker: Any, job: Job, prefetch: int, first: int = 0):
        self.pool = pool
        self.prefetch = max(1, prefetch)
        self.id = pool.register(maker, job, self.prefetch)
        self.next_batch = first
        self._requested = first
        self._generation = pool.generation

    def request_ahead(self) -> None:
        """Keep `prefetch` batches requested (the first request forks the workers, the caller
        waiting: a loader with a thread of its own calls this first, before its thread runs, so
        that no thread of its is in the middle of something when the process forks)."""
        if self._generation != self.pool.generation:  # the workers were restarted: ask again
            self._requested, self._generation = self.next_batch, self.pool.generation
        while self._requested < self.next_batch + self.prefetch:
            if not self.pool.request(self.id, self._requested, self._generation):
                return
            self._requested += 1

    def __next__(self) -> Any:
        while True:
            self.request_ahead()
            try:
                value = self.pool.get(self.id, self.next_batch, self._generation)
            except ReplicateError:
                # Ask for this batch again, so that a next() after the error raises it again (as the
                # serial path does) instead of waiting for a batch nobody was asked for.
                self.pool.request(self.id, self.next_batch, self._generation)
                raise
            if value is not RESTARTED:
                self.next_batch += 1
                return value

    @property
    def delivered(self) -> dict[str, int]:
        """This stream's batches received in place and pickled (DataPool.delivered)."""
        return self.pool.delivered[self.id]

    def close(self) -> None:
        """This stream is done with (its loader closed); the pool serves the others on."""
        self.pool.release(self.id)


def workers_per_process() -> int:
    """Data workers for each training process of this machine: the CPUs this process may use
    (replicate.data.cpus), shared by the processes of a data-parallel run here, less one for the
    process itself."""
    from replicate.data.cpus import available_cpus

    world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, available_cpus() // max(1, world) - 1)
