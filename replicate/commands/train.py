"""Train a net from a solver prototxt, with Caffe's solver semantics.

  python -m replicate train solver.prototxt
  python -m replicate train solver.prototxt --weights base.caffemodel     # fine-tune / transfer
  python -m replicate train solver.prototxt --snapshot snap_iter_10000.solverstate  # resume
  python -m replicate train solver.prototxt --force    # start again where a run was (replaces it)
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

A folder made by `generate` names in manifest.json the weights a transfer net starts from (its
base net's final snapshot); without --weights, train copies them and says so, or stops when
they do not exist yet (--from-scratch: random fillers instead).  A folder that holds an earlier
run is refused unless resumed (--snapshot) or started again (--force: the earlier run is moved aside,
deleted once the new run has written its first snapshot, and put back if the new start fails
before that, so a mistyped input never costs a finished run).  On a terminal a
progress line with the rate and the time left follows the log lines.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from replicate.errors import ReplicateError
from replicate.experiments.manifest import starting_weights
from replicate.invocation import command
from replicate.solver.device import PRECISIONS
from replicate.solver.requests import EXIT_REQUEUE
from replicate.solver.run import check_solver_file, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("solver", help="solver .prototxt (any Caffe version)")
    parser.add_argument("--weights", help="caffemodel(s) to copy by layer name before training, comma-separated")
    parser.add_argument("--snapshot", help=".solverstate to resume from")
    parser.add_argument("--allow-missing-layers", metavar="NAME,...|all",
                        help="accept weights that leave these layers at their fillers: a frozen layer (every "
                             "lr_mult 0) they lack, or all of them; refused otherwise")
    parser.add_argument("--from-scratch", action="store_true",
                        help="start from the fillers even where manifest.json names starting weights")
    parser.add_argument("--force", action="store_true",
                        help="start again in a folder that holds an earlier run: its logs and snapshots are "
                             "deleted once the new run has written its first snapshot (put back if it fails before)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the solver's solver_mode)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 = Caffe's arithmetic (default); tf32 or bf16 autocast for speed")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster convolutions on GPUs)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the nets; for SGD each training iteration (forward, backward, update) "
                             "becomes one graph, replayed as a CUDA graph on a GPU")
    parser.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                        help="with --compile on a GPU, launch the compiled iteration's kernels instead of replaying "
                             "one recorded CUDA graph")
    parser.add_argument("--data-workers", type=int,
                        help="worker processes reading records for all the data layers (default on a GPU: the "
                             "CPUs this process may use, less one, shared by torchrun's local processes; on the "
                             "CPU: REPLICATE_DATA_WORKERS or 0)")
    parser.add_argument("--snapshot-keep", type=int, default=0, metavar="K",
                        help="keep only the last K snapshots and the final one (default 0: keep all, as Caffe)")


def _starting_weights(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """--weights as given; else the base net's weights a generated net's manifest names (and
    the log line that says so); an error when those do not exist yet."""
    if args.from_scratch and (args.weights or args.snapshot):
        raise ReplicateError("--from-scratch starts from the fillers: give it without --weights or --snapshot")
    if args.weights or args.snapshot or args.from_scratch:
        return args.weights, []
    start = starting_weights(Path(args.solver).parent)
    if start is None:
        return None, []
    if not start.path.is_file():
        base_solver = start.path.parent / "solver.prototxt"
        first = (f"train {start.base} first ({command('train', str(base_solver))})" if base_solver.is_file()
                 else f"train {start.base} first")
        raise ReplicateError(
            f"{start.net} starts from {start.base}'s final weights {start.path} ({start.manifest}), which do "
            f"not exist yet: {first}, or give them: {command('train', args.solver, '--weights', 'FILE')}, "
            f"or add --from-scratch to start from random fillers (not the paper's {start.net})")
    return str(start.path), [f"Starting weights from {start.manifest}: {start.base}'s final snapshot "
                             f"{start.path} (--weights to choose others, --from-scratch for none)"]


def run(args: argparse.Namespace) -> int:
    check_solver_file(Path(args.solver))  # before a manifest beside it is read
    weights, announce = _starting_weights(args)
    result = train(
        args.solver, weights, args.snapshot, args.device, args.precision,
        channels_last=args.channels_last, compile=args.compile, data_workers=args.data_workers,
        snapshot_keep=args.snapshot_keep, force=args.force, announce=announce, cuda_graph=args.cuda_graph,
        allow_missing=args.allow_missing_layers,
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
