"""Time CaffeNet training steps through the real Solver: forward, backward, Caffe's SGD update.

The net is the paper's CaffeNet (benchmarks/caffenet_train.prototxt, every layer learning) with
its batch set to the one asked for, fed either synthetic batches through its Input blobs (step
speed alone) or a Data layer reading an LMDB (end to end: loading, transfer and the step).
Steps are timed after `warmup` untimed ones (cuDNN autotuning, torch.compile, worker start-up),
with the device synchronised around the timed span.  The losses are reported too: a step's
speed is only meaningful while its numbers are (synthetic batches of random labels, trained at
the paper's learning rate, may drift far from a real run's values).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from replicate.bench.peak import peak_tflops, step_flops
from replicate.data.loader import item_size
from replicate.data.throughput import open_source
from replicate.io.prototxt import read_net_text
from replicate.net.cpu_memory import keep_freed_memory
from replicate.proto import caffe_pb2
from replicate.solver.log import RunLog
from replicate.solver.solver import Solver, device_name

CAFFENET = Path(__file__).resolve().parents[2] / "benchmarks" / "caffenet_train.prototxt"
CROP = 227


def caffenet(batch: int, lmdb: str | None = None) -> caffe_pb2.NetParameter:
    """CaffeNet of batch `batch`: Input blobs, or a Data layer over `lmdb` (an LMDB or a view of a
    store; TRAIN transform: random crop of 227, or of the image when smaller, and mirror)."""
    net = read_net_text(CAFFENET)
    inputs = [layer for layer in net.layer if layer.type == "Input"]
    for layer in inputs:
        layer.input_param.shape[0].dim[0] = batch
    if lmdb is None:
        return net
    source = open_source(lmdb)
    try:
        crop = min(CROP, *item_size(source.item(0)))
    finally:
        source.close()
    data = caffe_pb2.LayerParameter(name="data", type="Data", top=["data", "label"])
    data.transform_param.crop_size = crop
    data.transform_param.mirror = True
    data.data_param.source = str(lmdb)
    data.data_param.batch_size = batch
    data.data_param.backend = caffe_pb2.DataParameter.LMDB
    layers = [data] + [layer for layer in net.layer if layer.type != "Input"]
    del net.layer[:]
    net.layer.extend(layers)
    return net


def solver_param(net: caffe_pb2.NetParameter, device: torch.device) -> caffe_pb2.SolverParameter:
    """The paper's solver settings (Caffe's ImageNet recipe) around `net`."""
    param = caffe_pb2.SolverParameter(
        base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="step", gamma=0.1, stepsize=100000,
        max_iter=450000, random_seed=0, display=0,
        solver_mode=caffe_pb2.SolverParameter.GPU if device.type == "cuda" else caffe_pb2.SolverParameter.CPU,
    )
    param.net_param.CopyFrom(net)
    return param


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    device: torch.device,
    batch: int,
    precision: str,
    iterations: int,
    warmup: int,
    channels_last: bool = False,
    compile: bool | str = False,
    lmdb: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """ms per step, images/s and fraction of the device's peak for one setting."""
    net = caffenet(batch, lmdb)
    solver = Solver(solver_param(net, device), Path.cwd(), device, RunLog(None, None), precision, channels_last,
                    compile, data_workers=workers)
    inputs = None
    if lmdb is None:
        generator = torch.Generator().manual_seed(0)
        data = torch.randn(batch, 3, CROP, CROP, generator=generator) * 50
        inputs = {"data": data.to(device), "label": torch.randint(0, 1000, (batch,), generator=generator).float().to(device)}
        if channels_last:
            inputs["data"] = inputs["data"].contiguous(memory_format=torch.channels_last)

    losses: list[float] = []

    def step() -> float:
        for e in solver.entries:
            e.param.grad = None
        start = time.perf_counter()
        losses.append(solver.forward_backward(inputs))  # float(): waits for the device
        solver.apply_update()
        solver.iter += 1
        _sync(device)
        return (time.perf_counter() - start) * 1000

    if device.type == "cpu":
        keep_freed_memory()
    try:
        for _ in range(warmup):
            step()
        times = [step() for _ in range(iterations)]
    finally:
        solver.close()
    ms = statistics.median(times)
    flops = step_flops(solver.net)
    name = device_name(device)
    peak = peak_tflops(name, precision)
    achieved = flops / (ms / 1000) / 1e12
    return {
        "precision": precision,
        "batch": batch,
        "channels_last": channels_last,
        "compile": compile,
        "ms_per_step": ms,
        "ms_per_step_mean": statistics.mean(times),
        "ms_per_step_min": min(times),
        "images_per_s": batch / (ms / 1000),
        "gflop_per_image": flops / batch / 1e9,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "fraction_of_peak": achieved / peak if peak else None,
        "data": "synthetic" if lmdb is None else str(lmdb),
        **solver.data_feed,
        "losses": losses,
    }
