"""`train` and `test` as Caffe's command line runs them: load, check every input, then run.

Every file a run needs (nets, data sources, mean files, weights, a snapshot to resume) is
checked while the solver is built, so a typo fails in the first second rather than after a
night of training.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from replicate.errors import ReplicateError
from replicate.invocation import command
from replicate.io.binary import file_digest
from replicate.io.model import load_caffemodel, load_net, load_solver
from replicate.net.compile import CompiledNet
from replicate.net.cpu_memory import keep_freed_memory
from replicate.net.copy_check import WeightsLoad, frozen_layers, learnable_layers, parse_allowed
from replicate.net.weights import copy_trained_layers
from replicate.proto import caffe_pb2
from replicate.solver.aside import ASIDE, Aside, recover
from replicate.solver.data_feed import close_data_layers
from replicate.solver.device import set_precision
from replicate.solver.distributed import join, leave
from replicate.solver.folder_lock import hold
from replicate.solver.log import RunLog, caffe_number, output_text
from replicate.solver.outputs import SNAPSHOT_EXTENSIONS, earlier_run, newest_solverstate
from replicate.solver.requests import Requests
from replicate.solver.snapshots import weights_not_state
from replicate.solver.solver import Solver


@dataclass
class TrainResult:
    """Where a run ended: its last iteration, its newest .solverstate, its log and metrics."""

    iterations: int
    last_snapshot: Path | None
    log: Path
    metrics: Path
    stopped_early: bool
    #: Stopped by SIGTERM or SIGUSR2 after a snapshot: exit with requests.EXIT_REQUEUE.
    requeued: bool = False


def pick_device(requested: str | None, solver_mode: int | None = None) -> torch.device:
    """--device wins; else the solver's solver_mode (GPU falls back to CPU when none is here).
    A --device that torch does not know, that this machine lacks, or that is neither a CPU nor
    a CUDA device (the two this program's arithmetic is tested on) is a one-line error, not
    torch's traceback at the first tensor moved."""
    if requested is None:
        wants_gpu = solver_mode == caffe_pb2.SolverParameter.GPU
        requested = "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ReplicateError(f"--device {requested}: not a device; give cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ReplicateError(f"--device {requested} was asked for but no CUDA device is available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ReplicateError(f"--device {requested}: this machine has {count} CUDA device(s), "
                                 f"cuda:0 to cuda:{count - 1}")
    elif device.type != "cpu":
        raise ReplicateError(f"--device {requested}: this program runs on cpu or cuda (cuda:N)")
    return device


def check_solver_file(path: Path) -> None:
    """The solver must be a file.  A folder (a net's folder, as `generate` names them) is said to
    be one, with the solver file in it when there is exactly one `*solver*.prototxt`."""
    if path.is_dir():
        found = sorted(path.glob("*solver*.prototxt"))
        hint = f": give its solver file, {found[0]}" if len(found) == 1 else ": give the solver file in it"
        raise ReplicateError(f"solver {path} is a folder{hint}")
    if not path.is_file():
        raise ReplicateError(f"solver file {path} does not exist")


def set_snapshot_prefix(param: caffe_pb2.SolverParameter, solver_path: Path) -> None:
    """Caffe's UpgradeSnapshotPrefixProperty: no prefix -> the solver file's name without its
    extension; a prefix naming a directory -> that directory / the solver file's stem."""
    folder = solver_path.resolve().parent
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = solver_path.stem
    elif (folder / param.snapshot_prefix).is_dir():
        param.snapshot_prefix = str(Path(param.snapshot_prefix) / solver_path.stem)


def _weights_files(weights: str) -> list[Path]:
    """The files of `--weights a.caffemodel,b.caffemodel`, each checked to exist."""
    paths = [Path(name) for name in weights.split(",")]
    for path in paths:
        if not path.is_file():
            raise ReplicateError(f"weights file {path} does not exist")
    return paths


def _copy_weights(net: CompiledNet, weights: str, log: RunLog, load: WeightsLoad) -> None:
    """`--weights a.caffemodel,b.caffemodel`: each copied by layer name, in order, as Caffe does;
    then `load` checks that they filled what they must (replicate.net.copy_check) and the log
    says which of the net's learnable layers they filled."""
    for path in _weights_files(weights):
        log.info(f"Finetuning from {path}", "caffe.cpp:142")
        source = load_caffemodel(path)
        report = copy_trained_layers(net.layer_blobs(), source)
        copied = set(report.copied)
        for layer in source.layer:  # in the source's order, as Caffe walks it
            if layer.name in copied:
                log.info(f"Copying source layer {layer.name}", "net.cpp:744")
            else:
                log.info(f"Ignoring source layer {layer.name}", "net.cpp:741")
        load.add(str(path), report.copied, source, file_digest(path))
    load.finish()
    for line in load.lines():
        log.info(line, "weights.py:0")


def _listing(paths: Sequence[Path]) -> str:
    """'train.log, metrics.jsonl and 4 snapshot files', for messages about an earlier run."""
    names = [p.name for p in paths if not p.name.endswith(SNAPSHOT_EXTENSIONS)]
    count = len(paths) - len(names)
    if count:
        names.append(f"{count} snapshot file{'s' if count > 1 else ''}")
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _refusal(solver_path: Path, param: caffe_pb2.SolverParameter, earlier: list[Path]) -> str:
    """Why a fresh run is refused in this folder, and how to continue or restart it."""
    held = f"{solver_path.parent} already holds a run ({_listing(earlier)})"
    restart = "add --force to start again (deletes them once the new run has written its first snapshot)"
    newest = newest_solverstate(solver_path.resolve().parent / param.snapshot_prefix)
    if newest is None:
        return f"{held} with no snapshot to resume from; {restart}"
    iteration, state = newest
    if iteration >= param.max_iter:
        return f"{held} that finished at iteration {iteration}; {restart}, or train in another folder"
    shown = Path(solver_path.parent, param.snapshot_prefix).parent / state.name
    return (f"{held} stopped at iteration {iteration} of {param.max_iter}; resume it with "
            f"`{command('train', str(solver_path), '--snapshot', str(shown))}`, or {restart}")


def train(
    solver_path: str | Path,
    weights: str | None = None,
    snapshot: str | Path | None = None,
    device: str | None = None,
    precision: str = "fp32",
    echo: bool = True,
    channels_last: bool = False,
    compile: bool | str = False,
    data_workers: int | None = None,
    snapshot_keep: int = 0,
    force: bool = False,
    announce: Sequence[str] = (),
    cuda_graph: bool = True,
    allow_missing: str | None = None,
) -> TrainResult:
    """Train as `caffe train -solver S [-weights W] [-snapshot X]`; logs next to the solver.

    Started by torchrun (WORLD_SIZE > 1) it is one process of a data-parallel run: the nets'
    batch sizes are global batches split over the processes, and only rank 0 logs and snapshots.
    `snapshot_keep` K > 0 keeps the last K snapshots and the final one (0: all, as Caffe).
    Every data source and worker the run opened is closed when it returns, on every path.
    A folder where an earlier run trained (its logs, its snapshots) is refused unless the run resumes
    (`snapshot`) or `force` says to start again: the earlier run is then moved aside and deleted
    only once the new one has written its first snapshot; a start that fails before that puts it
    back, and an earlier run a killed start left aside is settled first (replicate.solver.aside).
    `announce`: lines for the log's start (e.g. where the weights come from).  The weights must
    fill every frozen layer, and each file some layer, unless `allow_missing` ("NAME,..." or "all")
    accepts the layers they leave out (replicate.net.copy_check); a resumed snapshot must fill
    every learnable layer.
    Signals are listened to from the start, as `caffe train` does, so a SIGTERM while the nets
    are being built still ends in a snapshot (replicate.solver.requests).
    """
    solver_path = Path(solver_path)
    check_solver_file(solver_path)
    if weights and snapshot:
        raise ReplicateError("give either --weights (to fine-tune) or --snapshot (to resume), not both")
    if force and snapshot:
        raise ReplicateError("--force starts again and --snapshot resumes: give one of them")
    if weights:
        _weights_files(weights)
    if device is not None:
        pick_device(device)  # said before the folder is locked or touched
    param = load_solver(solver_path)
    folder = solver_path.resolve().parent
    set_snapshot_prefix(param, solver_path)
    prefix = folder / param.snapshot_prefix
    snapshot = Path(snapshot) if snapshot else None
    if snapshot is not None and not snapshot.is_file():
        raise ReplicateError(f"snapshot {snapshot} does not exist")
    if snapshot is not None and snapshot.suffix == ".caffemodel":  # said before the folder is touched
        raise ReplicateError(weights_not_state(snapshot))
    allowed = parse_allowed(allow_missing)
    if allowed and not (weights or snapshot):
        raise ReplicateError("--allow-missing-layers accepts layers that weights leave out: give it with --weights "
                             "or --snapshot")
    # Rank 0 alone touches the folder, as it alone logs and snapshots; no other trainer may.
    rank0 = os.environ.get("RANK", "0") == "0"
    with hold(folder) if rank0 else contextlib.nullcontext():
        recovered = recover(folder, prefix) if rank0 else None
        earlier = [] if snapshot is not None else earlier_run(folder, prefix)
        if earlier and not force:
            raise ReplicateError(_refusal(solver_path, param, earlier) + (f" ({recovered})" if recovered else ""))
        group, device = join(device)
        main = group.is_main
        aside = Aside.move(folder, prefix, earlier) if main and earlier else None
        solved = False
        try:
            log = RunLog(folder if main else None, echo and main, append=snapshot is not None)
            requests = Requests()
            try:
                with requests.listen():
                    target = pick_device(device, param.solver_mode)
                    if target.type == "cpu":
                        keep_freed_memory()
                    world = f"; {group.world} processes (data parallel)" if group.world > 1 else ""
                    log.info(f"Use {target.type.upper()}; precision {precision}{world}", "caffe.cpp:197")
                    if recovered:
                        log.info(recovered, "train.py:0")
                    if earlier:
                        log.info(f"--force: moved the earlier run's {_listing(earlier)} to {folder / ASIDE}; they are "
                                 "deleted once this run has written its first snapshot, put back if it fails before",
                                 "train.py:0")
                    for line in announce:
                        log.info(line, "train.py:0")
                    solver = Solver(param, folder, target, log, precision, channels_last, compile, group,
                                    data_workers, requests, snapshot_keep, cuda_graph)
                    if aside is not None:
                        solver.after_snapshot = aside.discard
                    try:
                        if weights:
                            load = WeightsLoad(learnable_layers(solver.net), frozen_layers(solver.net), allowed)
                            _copy_weights(solver.net, weights, log, load)
                            solver.weights = load.record()
                            solver.sync_weights()
                        log.info("Starting Optimization", "caffe.cpp:232")
                        solver.solve(snapshot, allowed)
                    finally:
                        solver.close()
                    if aside is not None and aside.settled:  # the writer settles it: said here, in the log's thread
                        log.info(f"--force: the earlier run's {_listing(earlier)} were deleted when this run wrote its "
                                 "first snapshot", "train.py:0")
                solved = True
            finally:
                log.close()
        finally:
            leave(group)
            if aside is not None and solved:
                aside.discard()  # a solver that writes no snapshot: the run's end is when it stands
            elif aside is not None:
                aside.restore()
                if echo:
                    print(f"the earlier run's {_listing(earlier)} are back in {folder}: this start failed "
                          "before its first snapshot", file=sys.stderr, flush=True)
        return TrainResult(solver.iter, solver.last_snapshot, folder / "train.log", folder / "metrics.jsonl",
                           solver.stopped_early, solver.requeued)


def test(
    model: str | Path,
    weights: str | Path | None,
    iterations: int,
    device: str | None = None,
    precision: str = "fp32",
    allow_missing: str | None = None,
) -> dict[str, float]:
    """`caffe test`: per-batch outputs, then each output's mean over the batches.  Nothing learns
    in a test, so `weights` must be given (caffe test refuses to score without them) and fill every
    learnable layer unless `allow_missing` accepts it."""
    model = Path(model)
    if not model.is_file():
        raise ReplicateError(f"model file {model} does not exist")
    if iterations < 1:
        raise ReplicateError("--iterations must be at least 1")
    allowed = parse_allowed(allow_missing)
    if allowed and not weights:
        raise ReplicateError("--allow-missing-layers accepts layers that weights leave out: give it with --weights")
    set_precision(precision)
    target = pick_device(device, caffe_pb2.SolverParameter.CPU)
    if not weights:
        # Scored with its fillers' random values the net would print numbers that mean nothing.
        raise ReplicateError("test needs the trained weights to score (--weights W.caffemodel), as caffe test does")
    log = RunLog(None)
    net = CompiledNet(load_net(model), caffe_pb2.TEST, folder=model.resolve().parent).to(target)
    layers = learnable_layers(net)
    _copy_weights(net, str(weights), log, WeightsLoad(layers, layers, allowed, "test"))
    weights_of = net.blob_loss_weights
    totals: dict[str, np.ndarray] = {}
    loss = np.float32(0)
    try:
        with torch.no_grad():
            for i in range(iterations):
                result = net()
                loss += np.float32(float(result.loss))
                for name, value in result.outputs.items():
                    values = value.float().reshape(-1).cpu().numpy()
                    totals[name] = values.copy() if name not in totals else totals[name] + values
                    for v in values.tolist():
                        log.info(f"Batch {i}, {name} = {caffe_number(v)}", "caffe.cpp:304")
    finally:
        close_data_layers([net])  # their worker processes, which would outlive the command
    log.info(f"Loss: {caffe_number(float(loss / np.float32(iterations)))}", "caffe.cpp:309")
    means = {}
    for name, total in totals.items():
        mean = total / np.float32(iterations)
        for v in mean.tolist():
            log.info(output_text(name, v, weights_of.get(name, 0.0)), "caffe.cpp:317")
        means[name] = float(mean[0]) if mean.size == 1 else mean.tolist()
    log.close()
    return means
