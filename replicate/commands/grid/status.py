"""Show where a grid stands: each net's state, iteration and accuracy, with totals.

States: done, running, queued (SLURM), waiting (never started), stopped (resumable), blocked
(its base failed), failed (with the trainer's error line and the path of its train.out).  Where
squeue is here, a net recorded queued or running under a job that is no longer in SLURM's queue
shows as stopped, with the reason.
The metric (--metric, default accuracy) is the latest and the best validation value in the net's
metrics.jsonl: best is the lowest for a metric whose name holds "loss", else the highest.  A
metric no net has tested is an error that lists the outputs found.  --json prints the same for
machines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from replicate.errors import ReplicateError
from replicate.experiments import netstate
from replicate.experiments.planfile import Plan, read_plan
from replicate.experiments.squeue import queued_jobs
from replicate.experiments.status import collect, format_table, to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="plan.json written by `generate`")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--metric", default="accuracy",
                        help="validation output to show (test net #0; default accuracy); its best "
                             "value is the lowest when its name holds 'loss', else the highest")


def _queue(plan: Plan) -> dict[str, str] | None:
    """SLURM's queue where some net was submitted to it and squeue is here to ask; else None
    (the states are then as the nets recorded them).  A queue that cannot be read is said."""
    if not shutil.which("squeue") or not any(netstate.read_status(n.dir).get("job_id") for n in plan.nets):
        return None
    try:
        return queued_jobs()
    except ReplicateError as err:
        print(f"note: {err}; queued and running nets are shown as recorded", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    plan = read_plan(args.plan)
    reports = collect(plan, metric=args.metric, queued=_queue(plan))
    print(json.dumps(to_json(reports, args.metric), indent=1) if args.json
          else format_table(reports, args.metric))
    return 0
