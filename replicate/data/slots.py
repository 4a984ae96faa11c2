"""Shared memory that data workers fill in place: one stream's batch slots.

A batch of 256 float32 crops is 158 MB (256 raw 256x256 records, 50 MB).  Sent through a
torch.multiprocessing queue, each batch is copied into a fresh shared-memory file by the worker,
whose pages the kernel zeroes, maps and, once the training process drops the batch, frees again
in the training process: ~30 µs of the training process's CPU per image, a serial cost that caps
every worker count (issue 20).  Here the pool maps, before its workers fork, a few slots per
stream in one anonymous shared mapping (MAP_SHARED: what a forked worker writes, the parent reads;
nothing in /dev/shm to leak or to outgrow a container's limit).  A worker writes its batch into the
slot its task names and sends back only a small description; the training process views the slot
(no copy) until the last tensor made from it is gone, and the slot then takes the next batch.

On a GPU the slots are also page-locked (`pin`, cudaHostRegister, after the workers fork: the CUDA
driver may keep pinned ranges from later forks), so the host-to-device copy reads them directly and
asynchronously.  A slot is handed out at most once at a time: `take` before the worker writes,
`lend` when its batch is received, back in the free list when every view of it is gone.
"""

from __future__ import annotations

import collections
import mmap
import threading
import weakref

import numpy as np

PAGE = mmap.PAGESIZE


class Slots:
    """`count` slots of `size` bytes each, rounded up to whole pages (none when `size` is 0: every
    batch of the stream then travels pickled)."""

    def __init__(self, count: int, size: int):
        self.size = -(-size // PAGE) * PAGE
        self.count = count if self.size else 0
        self._map = mmap.mmap(-1, self.count * self.size) if self.count else None
        self._free = collections.deque(range(self.count))
        self._lock = threading.RLock()  # a finalizer may run wherever the last view of a slot dies
        self._lent = 0
        self._retired = False
        self._pinned: int | None = None  # the registered address, while registered

    def take(self) -> int | None:
        """A free slot for a worker to write into, or None when every slot is busy."""
        try:
            return self._free.popleft()
        except IndexError:
            return None

    def give_back(self, slot: int) -> None:
        """A slot taken but not lent (its batch came another way, or was lost to a restart)."""
        self._free.append(slot)

    def buffer(self, slot: int) -> np.ndarray:
        """In a worker: the slot's bytes, to write a batch into."""
        return np.frombuffer(self._map, np.uint8, self.size, slot * self.size)

    def lend(self, slot: int) -> np.ndarray:
        """In the training process: the slot's bytes.  Everything made from the array (numpy views,
        torch.from_numpy tensors and their views) keeps it alive; when the last is gone, the slot
        is free again."""
        array = np.frombuffer(self._map, np.uint8, self.size, slot * self.size)
        with self._lock:
            self._lent += 1
        weakref.finalize(array, self._returned, slot).atexit = False
        return array

    def _returned(self, slot: int) -> None:
        self._free.append(slot)
        with self._lock:  # unpinned under the lock: a `lend` cannot start a copy meanwhile
            self._lent -= 1
            if self._retired and not self._lent:
                self._unpin()

    def pin(self) -> bool:
        """Page-lock the slots for asynchronous copies to a CUDA device; False when the driver
        refuses (the copies then read pageable memory: slower, still right)."""
        import torch

        if self._map is None:
            return True
        address = np.frombuffer(self._map, np.uint8).ctypes.data
        if int(torch.cuda.cudart().cudaHostRegister(address, len(self._map), 1)) != 0:
            return False
        self._pinned = address
        return True

    def _unpin(self) -> None:
        if self._pinned is not None:
            import torch

            torch.cuda.cudart().cudaHostUnregister(self._pinned)
            self._pinned = None

    def retire(self) -> None:
        """The workers that wrote here are gone: unpin once no slot is lent any more (a lent slot
        may still be the source of a copy in flight; its holder waits for the copy before letting
        go).  The mapping itself goes with the last reference to it."""
        with self._lock:
            self._retired = True
            if not self._lent:
                self._unpin()
