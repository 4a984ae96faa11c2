"""Queue a plan's unfinished nets on SLURM (through submitit), dependants after their base.

Independent nets go out as one job array; the dependants of each base net as an array held by
`afterok` on the base's job.  Jobs requeue themselves at the time limit and resume from their
newest snapshot.  Submitting again is safe: finished nets are skipped and nets already queued
or running keep their job (--resubmit queues them anew, for jobs that are gone).  Each job's
files are under <runs>/submitit/<job id>; watch the grid with `grid status`.
"""

from __future__ import annotations

import argparse

from replicate.experiments.launch import GRID_SNAPSHOT_KEEP
from replicate.experiments.planfile import read_plan
from replicate.experiments.slurm import make_executor, submit_plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="plan.json written by `generate`")
    parser.add_argument("--slurm-partition", required=True, help="SLURM partition to queue on")
    parser.add_argument("--time", type=int, default=4320, metavar="MINUTES",
                        help="time limit per job; a job requeues itself at the limit (default 4320)")
    parser.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per job (default 1; 0: CPU)")
    parser.add_argument("--cpus-per-task", type=int, help="CPU cores per job (data loading)")
    parser.add_argument("--array-parallelism", type=int, default=256,
                        help="most jobs of one array running at once (default 256)")
    parser.add_argument("--max-requeues", type=int, default=20,
                        help="how often a job may requeue itself at the time limit (default 20)")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=[],
                        help="submit only these nets (and the base nets they need)")
    parser.add_argument("--resubmit", action="store_true",
                        help="queue nets again even when their status says queued or running")
    parser.add_argument("--snapshot-keep", type=int, default=GRID_SNAPSHOT_KEEP, metavar="K",
                        help="each net keeps its last K snapshots and its final one (default %(default)s: "
                             "the 148-net CaffeNet grid then ends with ~69 GB of snapshots; 0 keeps all)")


def run(args: argparse.Namespace) -> int:
    plan = read_plan(args.plan)
    executor = make_executor(
        plan, partition=args.slurm_partition, time_min=args.time, gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task, array_parallelism=args.array_parallelism,
        max_requeues=args.max_requeues,
    )
    jobs = submit_plan(
        plan, executor, only=args.only, device="cuda" if args.gpus_per_node else "cpu",
        resubmit=args.resubmit, snapshot_keep=args.snapshot_keep,
    )
    print(f"{len(jobs)} net(s) queued or in the queue; `python -m replicate grid status --plan {args.plan}`")
    return 0
