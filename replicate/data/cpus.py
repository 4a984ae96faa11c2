"""How many CPUs this process may use: what sizes worker pools.

`os.cpu_count()` counts the whole machine; on a cluster node a job is given a few of its cores
(SLURM's cpuset binding, `taskset`, a container's cpuset), and a pool sized by the machine would
run dozens of processes on them.  The affinity mask says which cores this process may run on;
SLURM_CPUS_PER_TASK caps it where SLURM allocates CPUs without binding them, and REPLICATE_CPUS
where a grid runs several trainers at once on the CPUs it was given
(replicate.experiments.cpushare).
"""

from __future__ import annotations

import os

#: The CPUs a launcher running several trainers at once gave this one (a count).
SHARE_ENV = "REPLICATE_CPUS"


def available_cpus() -> int:
    """The number of CPUs this process may run on (at least 1)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    for cap in ("SLURM_CPUS_PER_TASK", SHARE_ENV):
        value = os.environ.get(cap, "")
        if value.isdigit() and int(value) > 0:
            count = min(count, int(value))
    return max(1, count)
