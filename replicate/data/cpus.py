"""How many CPUs this process may use: what sizes worker pools.

`os.cpu_count()` counts the whole machine; on a cluster node a job is given a few of its cores
(SLURM's cpuset binding, `taskset`, a container's cpuset), and a pool sized by the machine would
run dozens of processes on them.  The affinity mask says which cores this process may run on;
SLURM_CPUS_PER_TASK caps it where SLURM allocates CPUs without binding them.
"""

from __future__ import annotations

import os


def available_cpus() -> int:
    """The number of CPUs this process may run on (at least 1)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        count = min(count, int(slurm))
    return max(1, count)
