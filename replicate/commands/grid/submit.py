"""Queue a plan's unfinished nets on SLURM (through submitit), dependants after their base.

Independent nets go out as one job array; the dependants of each base net as an array held by
`afterok` on the base's job.  Each job asks for --gpus-per-net GPUs (several: torchrun runs one
process per GPU inside the job), --cpus-per-task cores and --mem-gb of memory; --slurm-arg adds
what the site requires (account, qos, constraint, a typed gres, mail) to every job.  --signal-delay
seconds before its time limit SLURM signals the job, which stops its trainer (a snapshot, within
--stop-timeout) and requeues itself; on preemption or `scontrol requeue` the trainer snapshots
before it stops; either way the job resumes from its newest snapshot, bit for bit.  So a time
limit shorter than a net's run is fine: --time is capped at the partition's MaxTime (and at the
MaxWall of a `--slurm-arg qos=NAME`), and
`--time auto` asks for what each net still needs (its own speed from its train.log, or a `bench`
JSON's with --speed-from) times --time-margin.  Submitting again is safe: finished nets are
skipped and nets whose job is still in SLURM's queue keep it (--resubmit queues them anew
regardless); a net whose job is gone (scancel) is queued again.  Each job's files are under
<runs>/submitit/<job id>; watch the grid with `grid status`.
"""

from __future__ import annotations

import argparse
import shlex

from replicate.errors import ReplicateError
from replicate.experiments.launch import GRID_SNAPSHOT_KEEP, TRAIN_COMMAND, torchrun_command
from replicate.experiments.planfile import read_plan
from replicate.experiments.slurm import (CPUS_PER_GPU, MEM_GB_PER_GPU, make_executor, parse_slurm_args,
                                         submit_plan)
from replicate.experiments.timelimit import TimeLimits, bench_speed, job_limit
from replicate.invocation import command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="plan.json written by `generate`")
    parser.add_argument("--slurm-partition", required=True, help="SLURM partition to queue on")
    parser.add_argument("--time", default="4320", metavar="MINUTES|auto",
                        help="time limit per job, capped at the partition's MaxTime and a qos=NAME's MaxWall; a job requeues itself at "
                             "the limit and resumes (default 4320); auto: what each array's slowest net still "
                             "needs, from its train.log or --speed-from, times --time-margin, plus 5 minutes")
    parser.add_argument("--speed-from", metavar="BENCH_JSON",
                        help="for --time auto: `bench --out` JSON giving the speed of nets that have not trained yet")
    parser.add_argument("--time-margin", type=float, default=1.25,
                        help="for --time auto: factor on the estimated time (default 1.25)")
    parser.add_argument("--gpus-per-net", type=int, default=1,
                        help="GPUs per net, each job one net (default 1; 0: train on the CPU; N > 1: "
                             "torchrun runs N data-parallel processes)")
    parser.add_argument("--cpus-per-task", type=int,
                        help=f"CPU cores per job (default {CPUS_PER_GPU} per GPU: the trainer and its data workers)")
    parser.add_argument("--mem-gb", type=float, help=f"memory per job in GB (default {MEM_GB_PER_GPU} per GPU)")
    parser.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="an sbatch option for every job (repeatable), e.g. account=proj, qos=high, "
                             "constraint=h100, gres=gpu:h100:1 (replaces the plain GPU request), "
                             "mail-type=FAIL; a bare KEY for a flag")
    parser.add_argument("--signal-delay", type=int, default=120, metavar="SECONDS",
                        help="SLURM signals a job this long before its time limit (default 120)")
    parser.add_argument("--stop-timeout", type=float, default=90.0, metavar="SECONDS",
                        help="how long a signalled trainer has to snapshot and exit before it is killed; "
                             "below --signal-delay (default 90)")
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
    parser.add_argument("--train-command", metavar="CMD",
                        help="the trainer's command line before its arguments (default: this package's "
                             "`train`, through torchrun for --gpus-per-net > 1); e.g. a container wrapper")


def _minutes(text: str) -> int | None:
    """--time: minutes, or None for auto."""
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise ReplicateError(f"--time {text!r}: give minutes (a whole number) or auto")
    return int(text)


def run(args: argparse.Namespace) -> int:
    plan = read_plan(args.plan)
    minutes = _minutes(args.time)
    if args.stop_timeout <= 0 or args.stop_timeout >= args.signal_delay:
        raise ReplicateError(f"--stop-timeout {args.stop_timeout:g} s must be above 0 and below --signal-delay "
                             f"{args.signal_delay} s: the trainer must have snapshotted before the time limit")
    if minutes is not None and args.speed_from:
        raise ReplicateError("--speed-from is for --time auto")
    slurm_args = parse_slurm_args(args.slurm_arg)
    executor = make_executor(
        plan, partition=args.slurm_partition, time_min=minutes or 60, gpus_per_net=args.gpus_per_net,
        cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, array_parallelism=args.array_parallelism,
        max_requeues=args.max_requeues, signal_delay_s=args.signal_delay, slurm_args=slurm_args,
    )
    qos = slurm_args.get("qos")
    longest, limit_name = job_limit(args.slurm_partition, qos if isinstance(qos, str) else None)
    limits = TimeLimits(minutes, longest, bench=bench_speed(args.speed_from) if args.speed_from else None,
                        margin=args.time_margin, signal_delay_s=args.signal_delay, max_requeues=args.max_requeues,
                        limit_name=limit_name)
    if args.train_command:
        trainer = tuple(shlex.split(args.train_command))
    else:
        trainer = torchrun_command(args.gpus_per_net) if args.gpus_per_net > 1 else TRAIN_COMMAND
    jobs = submit_plan(
        plan, executor, only=args.only, device="cuda" if args.gpus_per_net else "cpu",
        train_command=trainer, resubmit=args.resubmit, snapshot_keep=args.snapshot_keep,
        stop_timeout_s=args.stop_timeout, slurm_args=slurm_args, time_limit=limits,
    )
    print(f"{len(jobs)} net(s) queued or in the queue; `{command('grid', 'status', '--plan', args.plan)}`")
    return 0
