"""How fast a store's records come off the file system it lives on, cold and from the page cache,
against what training on N GPUs asks of it.

Training reads a view in its shuffled order: one record at a time at random places in data.bin
(196,608 bytes each for raw 256x256 records, ~21 KB for JPEG ones), by one reading process per
CPU.  A whole raw store is 262 GB: more than most nodes' page cache, so most reads of an epoch
go to the file system.  Here a random sample of records is read the same way (pread, from
`threads` threads at once; the reads release the GIL) after the store's pages were dropped from
the page cache (posix_fadvise DONTNEED: the kernel drops a file's clean pages for any reader;
a page another process keeps locked stays), then read again from the cache.  How cold each
timed read really was is measured, not assumed: mincore says which of the sample's pages were
resident before the timed reads, and where the drop left some the sample is taken from the
records that are not.  A network file system's server cache, or the host's under a VM, is
beyond this process's reach: such reads count as cold and can be faster than the device.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from replicate.data.store import Store
from replicate.data.view import View, is_view
from replicate.errors import ReplicateError

_PROT_READ, _MAP_SHARED = 1, 1


def open_store(path: str | os.PathLike[str]) -> Store:
    """The store at `path`, or the store a view at `path` reads."""
    return View(path).store if is_view(path) else Store(path)


class Residency:
    """Which pages of a file are in the page cache (mincore over a read-only mapping)."""

    def __init__(self, path: Path):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mmap.restype = ctypes.c_void_p
        self._libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                    ctypes.c_long]
        self._libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
        self._libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size
        address = self._libc.mmap(None, self.size, _PROT_READ, _MAP_SHARED, self._fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            os.close(self._fd)
            raise ReplicateError(f"{path}: cannot map it to see what is cached (errno {ctypes.get_errno()})")
        self._address = address

    def resident(self, offset: int, length: int) -> tuple[int, int]:
        """(resident pages, pages) of the byte range."""
        first = offset // mmap.PAGESIZE
        pages = (offset + length - 1) // mmap.PAGESIZE - first + 1
        vec = (ctypes.c_ubyte * pages)()
        if self._libc.mincore(ctypes.c_void_p(self._address + first * mmap.PAGESIZE), pages * mmap.PAGESIZE, vec):
            raise ReplicateError(f"mincore failed (errno {ctypes.get_errno()})")
        return sum(v & 1 for v in vec), pages

    def close(self) -> None:
        self._libc.munmap(ctypes.c_void_p(self._address), self.size)
        os.close(self._fd)


def drop_cache(path: Path) -> None:
    """Ask the kernel to drop the file's pages from the page cache (clean pages only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed_reads(path: Path, offsets: np.ndarray, lengths: np.ndarray, threads: int) -> float:
    """Seconds to pread every (offset, length), in the given order, from `threads` threads that
    take the next record as they finish one (as reading workers share a shuffled epoch)."""
    fd = os.open(path, os.O_RDONLY)
    order = iter(range(len(offsets)))

    def work() -> int:
        done = 0
        for i in order:  # one shared iterator: each record is read once
            done += len(os.pread(fd, int(lengths[i]), int(offsets[i])))
        return done

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            got = sum(f.result() for f in [pool.submit(work) for _ in range(threads)])
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
    if got != int(lengths.sum()):
        raise ReplicateError(f"{path}: short reads ({got} of {int(lengths.sum())} bytes)")
    return seconds


@dataclass(frozen=True)
class ReadRate:
    """One timed pass over a sample: its records and bytes, the threads reading, the seconds, and
    the fraction of its pages that were in the page cache before (0: all cold)."""

    cache: str  # "cold" or "warm"
    threads: int
    records: int
    bytes: int
    seconds: float
    resident_before: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds

    def as_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "records_per_s": self.records_per_s, "bytes_per_s": self.bytes_per_s}


def _cold_sample(index: np.ndarray, residency: Residency, records: int, rng: np.random.Generator) -> np.ndarray:
    """`records` random records whose pages are out of the cache, as far as mincore says (a
    random sample when the drop left nothing resident)."""
    candidates = rng.permutation(len(index))
    picked: list[int] = []
    for record in candidates:
        cached, _ = residency.resident(int(index["offset"][record]), int(index["length"][record]))
        if cached == 0:
            picked.append(int(record))
            if len(picked) == records:
                break
    return np.array(picked, dtype=np.int64)


def measure(store: Store, threads: list[int], records: int, seed: int = 0) -> list[ReadRate]:
    """A cold and then a warm pass of `records` random records at each thread count; the warm
    pass alone where no record leaves the page cache (a store on tmpfs, pages held by others)."""
    path = store.path / "data.bin"
    index = np.asarray(store.index)
    rng = np.random.default_rng(seed)
    residency = Residency(path)
    results = []
    try:
        for count in threads:
            drop_cache(path)
            sample = _cold_sample(index, residency, min(records, len(index)), rng)
            passes = ("cold", "warm")
            if not len(sample):
                sample, passes = rng.permutation(len(index))[:records], ("warm",)
            offsets, lengths = index["offset"][sample], index["length"][sample]
            for cache in passes:
                pages = [residency.resident(int(o), int(n)) for o, n in zip(offsets, lengths)]
                cached = sum(r for r, _ in pages) / max(1, sum(p for _, p in pages))
                seconds = timed_reads(path, offsets, lengths, count)
                results.append(ReadRate(cache, count, len(sample), int(lengths.sum()), seconds, cached))
    finally:
        residency.close()
    return results


@dataclass(frozen=True)
class Need:
    """What N GPUs training at `images_per_gpu` each read from a store of `record_bytes` records."""

    gpus: int
    images_per_gpu: float
    record_bytes: float

    @property
    def bytes_per_s(self) -> float:
        return self.gpus * self.images_per_gpu * self.record_bytes

    def gpus_served(self, rate: ReadRate) -> float:
        """How many such GPUs `rate` keeps fed."""
        return rate.records_per_s / self.images_per_gpu
