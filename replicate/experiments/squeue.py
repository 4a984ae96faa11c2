"""SLURM's queue, as `squeue` lists it: which jobs are still pending, running or requeued, and
why SLURM keeps a pending one waiting.

Its own module, free of submitit, so that `grid status` can ask it wherever squeue is installed.
"""

from __future__ import annotations

import subprocess

from replicate.errors import ReplicateError

#: Pending reasons of a job that asks for more time than its partition, QOS or association
#: allows: SLURM keeps it pending for ever (unless the site rejects it at submission).  A QOS
#: the jobs get by default, or an association's limit, is not known before submitting
#: (replicate.experiments.timelimit caps only at the partition's and a named QOS's).
TOO_LONG = frozenset({"PartitionTimeLimit", "QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit"})
#: Pending reasons of a job that asks for more than it may ever have in one job (nodes, CPUs,
#: GPUs, memory per job; a QOS or account it may not use; a constraint no node has).
NEVER_AS_ASKED = frozenset({"PartitionNodeLimit", "BadConstraints", "InvalidQOS", "InvalidAccount",
                            "QOSNotAllowed", "AccountNotAllowed"})


def queued_jobs() -> dict[str, str]:
    """The jobs in SLURM's queue (pending, running, requeued, completing), array tasks as
    `<array job>_<task>` the way submitit names them, each with the reason SLURM gives for
    keeping it pending ("" while it runs)."""
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T|%r"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ReplicateError(f"cannot ask SLURM which jobs are queued (squeue: {err})") from None
    if out.returncode != 0:
        raise ReplicateError(f"cannot ask SLURM which jobs are queued: {out.stderr.strip() or 'squeue failed'}")
    jobs = {}
    for line in out.stdout.splitlines():
        job, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job:
            jobs[job] = reason.strip() if state.strip() == "PENDING" and reason.strip() != "None" else ""
    return jobs


def pending_note(reason: str) -> str:
    """What a pending job's reason means for its net: empty for none, SLURM's reason alone for a
    wait that ends by itself (priority, resources, a dependency), and what to do where SLURM will
    never start the job as it was submitted."""
    if not reason:
        return ""
    if reason in TOO_LONG or reason.endswith(("PerJobLimit", "PerJob")) or reason in NEVER_AS_ASKED:
        fix = ("a shorter --time (a net that reaches its limit snapshots, requeues and resumes)" if reason in TOO_LONG
               else "less asked of SLURM (--gpus-per-net, --cpus-per-task, --mem-gb, --slurm-arg)")
        return (f"pending ({reason}): SLURM will never start this job as submitted; "
                f"`grid submit --resubmit` with {fix} queues it anew")
    return f"pending ({reason})"
