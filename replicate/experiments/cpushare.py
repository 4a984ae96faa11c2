"""How trainers that run at once on one node share its CPUs (`grid run --gpus N`, `--jobs N`).

A trainer sizes itself from the CPUs it may use (replicate.data.cpus): torch's threads, and on a
GPU one data worker per CPU less one.  Four trainers started side by side would each see every
CPU of the grid and start 4 x (CPUs - 1) workers and 4 x CPUs threads on them.  So the grid
gives each concurrent trainer a share: a count (REPLICATE_CPUS, which available_cpus() honours
like SLURM_CPUS_PER_TASK, and OMP_NUM_THREADS unless the user set it) and, where the grid knows
which CPUs are its own, those CPUs themselves: the trainer is pinned to them (sched_setaffinity),
so that the shares are disjoint.  It knows them when its affinity mask is what limits it; under a
SLURM allocation that caps the count without binding CPUs (SLURM_CPUS_PER_TASK below the mask),
which of the node's CPUs are the job's is not known, and only the count is shared.  With more
trainers than CPUs each gets one CPU, shared round robin.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from replicate.data.cpus import SHARE_ENV, available_cpus


@dataclass(frozen=True)
class CpuShare:
    """The CPUs of one trainer: how many (its threads; on a GPU its data workers and itself),
    and which, when it is pinned to them (None: the count alone)."""

    count: int
    cpus: tuple[int, ...] | None = None

    def env(self, environ: dict[str, str]) -> dict[str, str]:
        """`environ` with this share: REPLICATE_CPUS, and OMP_NUM_THREADS unless the user chose it."""
        env = {**environ, SHARE_ENV: str(self.count)}
        if "OMP_NUM_THREADS" not in environ:
            env["OMP_NUM_THREADS"] = str(self.count)
        return env

    def pin(self) -> None:
        """In the trainer's process, before it starts threads: run only on this share's CPUs."""
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)

    def describe(self) -> dict[str, object]:
        return {"count": self.count, "cpus": list(self.cpus) if self.cpus is not None else None}


def split_cpus(trainers: int, cpus: Sequence[int] | None, limit: int) -> list[CpuShare]:
    """`trainers` fair shares of `limit` CPUs out of the mask `cpus` (None: unknown): disjoint
    runs of the mask when the mask is the limit, counts alone when a smaller limit leaves unknown
    which CPUs are ours.  The first `limit % trainers` shares get one CPU more; with more trainers
    than CPUs each gets one, round robin."""
    if trainers < 1 or limit < 1:
        raise ValueError(f"CPU shares of {limit} CPUs for {trainers} trainers")
    ordered = sorted(cpus) if cpus is not None else []
    pinned = cpus is not None and limit >= len(ordered)
    total = len(ordered) if pinned else limit
    if total <= trainers:
        return [CpuShare(1, (ordered[i % total],) if pinned else None) for i in range(trainers)]
    base, extra = divmod(total, trainers)
    shares, start = [], 0
    for i in range(trainers):
        count = base + (i < extra)
        shares.append(CpuShare(count, tuple(ordered[start:start + count]) if pinned else None))
        start += count
    return shares


def cpu_shares(trainers: int) -> list[CpuShare]:
    """The shares of `trainers` trainers run at once by this process, from the CPUs it may use."""
    try:
        mask: Sequence[int] | None = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: counts only
        mask = None
    return split_cpus(trainers, mask, available_cpus())
