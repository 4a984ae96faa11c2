"""Queue a plan's unfinished nets on SLURM (through submitit), dependants after their base.

Independent nets go out as one job array; the dependants of each base net as an array held by
`afterok` on the base's job.  Each job asks for --gpus-per-net GPUs (several: torchrun runs one
process per GPU inside the job), --cpus-per-task cores and --mem-gb of memory.  Jobs requeue
themselves at the time limit, and on preemption or `scontrol requeue` the trainer snapshots
before it stops; either way the job resumes from its newest snapshot, bit for bit.  Submitting
again is safe: finished nets are skipped and nets whose job is still in SLURM's queue keep it
(--resubmit queues them anew regardless); a net whose job is gone (scancel) is queued again.
Each job's files are under <runs>/submitit/<job id>; watch the grid with `grid status`.
"""

from __future__ import annotations

import argparse

from replicate.experiments.launch import GRID_SNAPSHOT_KEEP, TRAIN_COMMAND, torchrun_command
from replicate.experiments.planfile import read_plan
from replicate.experiments.slurm import CPUS_PER_GPU, MEM_GB_PER_GPU, make_executor, submit_plan
from replicate.invocation import command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="plan.json written by `generate`")
    parser.add_argument("--slurm-partition", required=True, help="SLURM partition to queue on")
    parser.add_argument("--time", type=int, default=4320, metavar="MINUTES",
                        help="time limit per job; a job requeues itself at the limit (default 4320)")
    parser.add_argument("--gpus-per-net", type=int, default=1,
                        help="GPUs per net, each job one net (default 1; 0: train on the CPU; N > 1: "
                             "torchrun runs N data-parallel processes)")
    parser.add_argument("--cpus-per-task", type=int,
                        help=f"CPU cores per job (default {CPUS_PER_GPU} per GPU: the trainer and its data workers)")
    parser.add_argument("--mem-gb", type=float, help=f"memory per job in GB (default {MEM_GB_PER_GPU} per GPU)")
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
        plan, partition=args.slurm_partition, time_min=args.time, gpus_per_net=args.gpus_per_net,
        cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, array_parallelism=args.array_parallelism,
        max_requeues=args.max_requeues,
    )
    trainer = torchrun_command(args.gpus_per_net) if args.gpus_per_net > 1 else TRAIN_COMMAND
    jobs = submit_plan(
        plan, executor, only=args.only, device="cuda" if args.gpus_per_net else "cpu",
        train_command=trainer, resubmit=args.resubmit, snapshot_keep=args.snapshot_keep,
    )
    print(f"{len(jobs)} net(s) queued or in the queue; `{command('grid', 'status', '--plan', args.plan)}`")
    return 0
