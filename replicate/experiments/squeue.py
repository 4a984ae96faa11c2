"""SLURM's queue, as `squeue` lists it: which jobs are still pending, running or requeued.

Its own module, free of submitit, so that `grid status` can ask it wherever squeue is installed.
"""

from __future__ import annotations

import subprocess

from replicate.errors import ReplicateError


def queued_jobs() -> set[str]:
    """The ids of every job in SLURM's queue (pending, running, requeued, completing), array tasks
    as `<array job>_<task>` the way submitit names them."""
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ReplicateError(f"cannot ask SLURM which jobs are queued (squeue: {err})") from None
    if out.returncode != 0:
        raise ReplicateError(f"cannot ask SLURM which jobs are queued: {out.stderr.strip() or 'squeue failed'}")
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}
