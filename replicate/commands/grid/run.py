"""Run a plan's nets on this machine, in dependency order, resuming whatever was left undone.

One net per GPU at a time with --gpus 0,1,2,3 (each trainer sees only its GPU), otherwise one
after another on --device.  Finished nets are skipped, stopped ones resume from their newest
solver state, a net whose base failed is marked blocked.  Ctrl-C stops the trainers cleanly
(they snapshot first); run the same command again to continue.  Exit status 0 when every net
is done, 1 when some failed or are blocked.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from typing import Any

from replicate.experiments.launch import GRID_SNAPSHOT_KEEP, TRAIN_COMMAND
from replicate.experiments.planfile import read_plan
from replicate.experiments.runner import GridRunner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="plan.json written by `generate`")
    parser.add_argument("--gpus", help="comma-separated GPU ids, one net on each at a time (e.g. 0,1,2,3; repeat an id to run two nets on it)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device when --gpus is not given")
    parser.add_argument("--jobs", type=int, default=1,
                        help="nets trained at once without --gpus (default 1); with --gpus or --jobs "
                             "each trainer gets its share of the CPUs this process may use, pinned to "
                             "them where it can be, as threads (unless OMP_NUM_THREADS is set) and data workers")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=[],
                        help="run only these nets (and the base nets they need)")
    parser.add_argument("--progress-every", type=float, default=60.0, metavar="SECONDS",
                        help="how often to print nets and iterations done, the rate so far, the "
                             "time left and each running net's iteration (default 60)")
    parser.add_argument("--train-command", default=shlex.join(TRAIN_COMMAND), metavar="CMD",
                        help="the trainer's command line before its arguments (default: this "
                             "package's `train`); any program keeping train's contract works")
    parser.add_argument("--stop-timeout", type=float, default=120.0, metavar="SECONDS",
                        help="on Ctrl-C or SIGTERM, how long the trainers have to snapshot and exit before "
                             "they are killed (default 120)")
    parser.add_argument("--snapshot-keep", type=int, default=GRID_SNAPSHOT_KEEP, metavar="K",
                        help="each net keeps its last K snapshots and its final one (default %(default)s: "
                             "the 148-net CaffeNet grid then ends with ~69 GB of snapshots; 0 keeps all)")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    plan = read_plan(args.plan)
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else []
    runner = GridRunner(
        plan, only=args.only, device=args.device, gpus=gpus, jobs=args.jobs,
        train_command=shlex.split(args.train_command),
        report=lambda line: print(line, flush=True), progress_s=args.progress_every,
        snapshot_keep=args.snapshot_keep, stop_timeout_s=args.stop_timeout,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's kill stops trainers like Ctrl-C
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup's ignore stands
        # A closed terminal: without this the runner died and left its trainers unsupervised
        # (their SIGHUP is Caffe's "snapshot and go on"), no further net started.
        signal.signal(signal.SIGHUP, _interrupt)
    states = runner.run()
    undone = {name: state for name, state in states.items() if state != "done"}
    for name, state in undone.items():
        print(f"{name}: {state}", file=sys.stderr)
    return 1 if undone else 0
