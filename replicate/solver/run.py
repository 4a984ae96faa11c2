"""`train` and `test` as Caffe's command line runs them: load, check every input, then run.

Every file a run needs (nets, data sources, mean files, weights, a snapshot to resume) is
checked while the solver is built, so a typo fails in the first second rather than after a
night of training.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from replicate.errors import ReplicateError
from replicate.io.model import load_caffemodel, load_net, load_solver
from replicate.net.compile import CompiledNet
from replicate.net.cpu_memory import keep_freed_memory
from replicate.net.weights import copy_trained_layers
from replicate.proto import caffe_pb2
from replicate.solver.distributed import join, leave
from replicate.solver.log import RunLog, caffe_number
from replicate.solver.nets import resolve_net_paths
from replicate.solver.solver import Solver, set_precision


@dataclass
class TrainResult:
    iterations: int
    last_snapshot: Path | None
    log: Path


def pick_device(requested: str | None, solver_mode: int | None = None) -> torch.device:
    """--device wins; else the solver's solver_mode (GPU falls back to CPU when none is here)."""
    if requested is None:
        wants_gpu = solver_mode == caffe_pb2.SolverParameter.GPU
        requested = "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ReplicateError("--device cuda was asked for but no CUDA device is available")
    return torch.device(requested)


def _copy_weights(net: CompiledNet, weights: str, log: RunLog) -> None:
    """`--weights a.caffemodel,b.caffemodel`: each copied by layer name, in order, as Caffe does."""
    for name in weights.split(","):
        path = Path(name)
        if not path.is_file():
            raise ReplicateError(f"weights file {path} does not exist")
        report = copy_trained_layers(net.layer_blobs(), load_caffemodel(path))
        log.info(f"Finetuning from {path}", "caffe.cpp:142")
        for layer in report.copied:
            log.info(f"Copying source layer {layer}", "net.cpp:744")
        for layer in report.ignored:
            log.info(f"Ignoring source layer {layer}", "net.cpp:746")


def train(
    solver_path: str | Path,
    weights: str | None = None,
    snapshot: str | Path | None = None,
    device: str | None = None,
    precision: str = "fp32",
    echo: bool = True,
    channels_last: bool = False,
    compile: bool | str = False,
) -> TrainResult:
    """Train as `caffe train -solver S [-weights W] [-snapshot X]`; logs next to the solver.

    Started by torchrun (WORLD_SIZE > 1) it is one process of a data-parallel run: the nets'
    batch sizes are global batches split over the processes, and only rank 0 logs and snapshots.
    """
    solver_path = Path(solver_path)
    if not solver_path.is_file():
        raise ReplicateError(f"solver file {solver_path} does not exist")
    if weights and snapshot:
        raise ReplicateError("give either --weights (to fine-tune) or --snapshot (to resume), not both")
    snapshot = Path(snapshot) if snapshot else None
    if snapshot is not None and not snapshot.is_file():
        raise ReplicateError(f"snapshot {snapshot} does not exist")
    param = load_solver(solver_path)
    folder = solver_path.resolve().parent
    group, device = join(device)
    main = group.is_main
    log = RunLog(folder if main else None, sys.stderr if echo and main else None, append=snapshot is not None)
    try:
        target = pick_device(device, param.solver_mode)
        if target.type == "cpu":
            keep_freed_memory()
        world = f"; {group.world} processes (data parallel)" if group.world > 1 else ""
        log.info(f"Use {target.type.upper()}; precision {precision}{world}", "caffe.cpp:197")
        solver = Solver(param, folder, target, log, precision, channels_last, compile, group)
        if weights:
            _copy_weights(solver.net, weights, log)
            solver.sync_weights()
        log.info("Starting Optimization", "caffe.cpp:232")
        solver.solve(snapshot)
    finally:
        log.close()
        leave(group)
    return TrainResult(solver.iter, solver.last_snapshot, folder / "train.log")


def test(
    model: str | Path,
    weights: str | Path | None,
    iterations: int,
    device: str | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """`caffe test`: per-batch outputs, then each output's mean over the batches."""
    model = Path(model)
    if not model.is_file():
        raise ReplicateError(f"model file {model} does not exist")
    if iterations < 1:
        raise ReplicateError("--iterations must be at least 1")
    set_precision(precision)
    target = pick_device(device, caffe_pb2.SolverParameter.CPU)
    log = RunLog(None)
    net = CompiledNet(resolve_net_paths(load_net(model), model.resolve().parent), caffe_pb2.TEST).to(target)
    if weights:
        _copy_weights(net, str(weights), log)
    weights_of = {n: w for tops, ws in zip(net.top_names, net.loss_weights) for n, w in zip(tops, ws)}
    totals: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for i in range(iterations):
            result = net()
            k = 0
            for name, value in result.outputs.items():
                values = value.float().reshape(-1).cpu().numpy()
                totals[name] = values.copy() if name not in totals else totals[name] + values
                for v in values.tolist():
                    log.info(f"Batch {i}, {name} = {caffe_number(v)}", "caffe.cpp:304")
                    k += 1
    means = {}
    for name, total in totals.items():
        mean = total / np.float32(iterations)
        w = weights_of.get(name, 0.0)
        for v in mean.tolist():
            extra = f" (* {caffe_number(w)} = {caffe_number(w * v)} loss)" if w else ""
            log.info(f"{name} = {caffe_number(v)}{extra}", "caffe.cpp:317")
        means[name] = float(mean[0]) if mean.size == 1 else mean.tolist()
    log.close()
    return means
