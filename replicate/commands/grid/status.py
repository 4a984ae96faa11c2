"""Show where a grid stands: each net's state, iteration and accuracy, with totals.

States: done, running, queued (SLURM), waiting (never started), stopped (resumable), blocked
(its base failed), failed (with the trainer's error line and the path of its train.out).
The metric (--metric, default accuracy) is the latest and the best validation value in the net's
metrics.jsonl: best is the lowest for a metric whose name holds "loss", else the highest.  A
metric no net has tested is an error that lists the outputs found.  --json prints the same for
machines.
"""

from __future__ import annotations

import argparse
import json

from replicate.experiments.planfile import read_plan
from replicate.experiments.status import collect, format_table, to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="plan.json written by `generate`")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--metric", default="accuracy",
                        help="validation output to show (test net #0; default accuracy); its best "
                             "value is the lowest when its name holds 'loss', else the highest")


def run(args: argparse.Namespace) -> int:
    reports = collect(read_plan(args.plan), metric=args.metric)
    print(json.dumps(to_json(reports, args.metric), indent=1) if args.json
          else format_table(reports, args.metric))
    return 0
