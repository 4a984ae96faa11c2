"""Train a net from a solver prototxt, with Caffe's solver semantics.

  python -m replicate train solver.prototxt
  python -m replicate train solver.prototxt --weights base.caffemodel     # fine-tune / transfer
  python -m replicate train solver.prototxt --snapshot snap_iter_10000.solverstate  # resume
  torchrun --nproc_per_node=8 -m replicate train solver.prototxt   # data parallel, 8 GPUs

Under torchrun each net's batch_size is the global batch, split evenly over the processes; the
gradients are averaged so training matches one process on the whole batch; rank 0 logs and
snapshots.  Relative paths in the solver and its nets resolve against the solver's folder.  The run writes
train.log (Caffe's log lines), metrics.jsonl and <prefix>_iter_N.caffemodel/.solverstate there.
Ctrl-C (SIGINT) finishes the current iteration, snapshots and stops (exit 0); SIGHUP snapshots
and goes on (Caffe's defaults); a second Ctrl-C stops at once.  SIGTERM and SIGUSR2 (a scheduler's
preemption, requeue, scancel or time limit) finish the current iteration, snapshot and exit 75
(EX_TEMPFAIL), which the grid reads as "requeue": `--snapshot` of that snapshot continues the run
bit for bit (the snapshot's .resume.json sidecar holds the data positions and random streams).
"""

from __future__ import annotations

import argparse
import os

from replicate.solver.requests import EXIT_REQUEUE
from replicate.solver.run import train
from replicate.solver.solver import PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("solver", help="solver .prototxt (any Caffe version)")
    parser.add_argument("--weights", help="caffemodel(s) to copy by layer name before training, comma-separated")
    parser.add_argument("--snapshot", help=".solverstate to resume from")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the solver's solver_mode)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 = Caffe's arithmetic (default); tf32 or bf16 autocast for speed")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster convolutions on GPUs)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training net's forward")
    parser.add_argument("--data-workers", type=int,
                        help="worker processes reading records for all the data layers (default on a GPU: the "
                             "CPUs this process may use, less one, shared by torchrun's local processes; on the "
                             "CPU: REPLICATE_DATA_WORKERS or 0)")
    parser.add_argument("--snapshot-keep", type=int, default=0, metavar="K",
                        help="keep only the last K snapshots and the final one (default 0: keep all, as Caffe)")


def run(args: argparse.Namespace) -> int:
    result = train(
        args.solver, args.weights, args.snapshot, args.device, args.precision,
        channels_last=args.channels_last, compile=args.compile, data_workers=args.data_workers,
        snapshot_keep=args.snapshot_keep,
    )
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for the run
    if result.requeued:  # every process stopped at the same iteration: all exit "requeue"
        if rank0:
            print(f"stopped at iteration {result.iterations} by a scheduler's signal; "
                  f"resume with --snapshot {result.last_snapshot}")
        return EXIT_REQUEUE
    if not rank0:
        return 0
    if result.stopped_early:
        # Exit 0 like Caffe after its SIGINT "stop"; the snapshot is where a rerun resumes.
        print(f"stopped at iteration {result.iterations}; resume with --snapshot {result.last_snapshot}")
        return 0
    print(f"trained to iteration {result.iterations}; log {result.log}")
    return 0
