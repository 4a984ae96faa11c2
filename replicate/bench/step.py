"""Time CaffeNet training steps through the real Solver: forward, backward, Caffe's SGD update.

The net is the paper's CaffeNet (benchmarks/caffenet_train.prototxt, every layer learning) with
its batch set to the one asked for, fed either synthetic batches through its Input blobs (step
speed alone) or a Data layer reading an LMDB (end to end: loading, transfer and the step).
Steps are timed after `warmup` untimed ones (cuDNN autotuning, torch.compile, CUDA graph
recording, worker start-up), with the device synchronised around the timed span only, as a
training run waits for it only when it displays, tests or snapshots.  The losses are reported too: a step's
speed is only meaningful while its numbers are (synthetic batches of random labels, trained at
the paper's learning rate, may drift far from a real run's values).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch._dynamo

from replicate.bench.peak import peak_tflops, step_flops
from replicate.checkout import PROJECT_DIR, in_checkout
from replicate.data.loader import item_size
from replicate.data.throughput import open_source
from replicate.io.prototxt import read_net_text
from replicate.net.cpu_memory import keep_freed_memory
from replicate.proto import caffe_pb2
from replicate.solver.device import device_name
from replicate.solver.log import RunLog
from replicate.solver.solver import Solver

CAFFENET = PROJECT_DIR / "benchmarks" / "caffenet_train.prototxt"
CROP = 227


def caffenet(batch: int, lmdb: str | None = None) -> caffe_pb2.NetParameter:
    """CaffeNet of batch `batch`: Input blobs, or a Data layer over `lmdb` (an LMDB or a view of a
    store; TRAIN transform: random crop of 227, or of the image when smaller, and mirror)."""
    net = read_net_text(in_checkout(CAFFENET))
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


def sync(device: torch.device) -> None:
    """Wait for the device (a timed span starts and ends with one)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ms_per_call(step: Callable[[], object], device: torch.device, warmup: int, iterations: int) -> float:
    """The mean ms of `iterations` calls of `step` between two device synchronisations, after
    `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync(device)
    return (time.perf_counter() - start) * 1000 / iterations


def synthetic_batch(batch: int, device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    """Random images on the device and random labels of 1,000 classes on the host, where a data
    layer delivers them (the net checks them there and copies them over without waiting)."""
    generator = torch.Generator().manual_seed(0)
    data = (torch.randn(batch, 3, CROP, CROP, generator=generator) * 50).to(device)
    if channels_last:
        data = data.contiguous(memory_format=torch.channels_last)
    label = torch.randint(0, 1000, (batch,), generator=generator).float()
    return {"data": data, "label": label.pin_memory() if device.type == "cuda" else label}


def run_iterations(solver: Solver, inputs: dict[str, torch.Tensor] | None, count: int) -> None:
    """`count` training iterations as `Solver.step` runs them (iteration, loss monitor), without
    its tests, displays and snapshots."""
    for _ in range(count):
        loss, rate = solver.iteration(inputs)
        solver.monitor.add(loss, solver.iter, solver.iter, rate)
        solver.iter += 1


def waits_for_device(solver: Solver, inputs: dict[str, torch.Tensor] | None, count: int = 3) -> bool | None:
    """Whether warm training iterations make the host wait for the GPU, per
    torch.cuda.set_sync_debug_mode (None off CUDA, where nothing is asynchronous)."""
    if solver.device.type != "cuda":
        return None
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_iterations(solver, inputs, count)
    except RuntimeError as err:
        if "synchroniz" not in str(err):
            raise
        return True
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return False


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
    space_to_depth: bool = False,
) -> dict[str, Any]:
    """ms per step, images/s and fraction of the device's peak for one setting, timed from a
    clean compiler state (torch._dynamo.reset): the mean of `iterations` steps between two
    device synchronisations, after `warmup` untimed ones.  `space_to_depth`: the convolutions
    that fit run as space-to-depth (CompiledNet.use_space_to_depth; named in the result)."""
    torch._dynamo.reset()
    net = caffenet(batch, lmdb)
    solver = Solver(solver_param(net, device), Path.cwd(), device, RunLog(None, None), precision, channels_last,
                    compile, data_workers=workers)
    converted = solver.net.use_space_to_depth() if space_to_depth else []
    inputs = synthetic_batch(batch, device, channels_last) if lmdb is None else None
    if device.type == "cpu":
        keep_freed_memory()
    try:
        run_iterations(solver, inputs, warmup)
        sync(device)
        start = time.perf_counter()
        run_iterations(solver, inputs, iterations)
        sync(device)
        ms = (time.perf_counter() - start) * 1000 / iterations
        waits = waits_for_device(solver, inputs)
        losses = [loss for _, _, loss, _ in solver.monitor.read().records]
    finally:
        solver.close()
    flops = step_flops(solver.net)
    name = device_name(device)
    peak = peak_tflops(name, precision)
    achieved = flops / (ms / 1000) / 1e12
    return {
        "precision": precision,
        "batch": batch,
        "channels_last": channels_last,
        "compile": compile,
        "space_to_depth": converted,
        "one_graph": solver.fused is not None,
        "cuda_graph": solver.fused is not None and solver.fused.cuda_graph,
        "compile_checks": solver.compile_checks,  # a failed one: the step timed is eager
        "waits_for_device": waits,
        "ms_per_step": ms,
        "images_per_s": batch / (ms / 1000),
        "gflop_per_image": flops / batch / 1e9,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "fraction_of_peak": achieved / peak if peak else None,
        "data": "synthetic" if lmdb is None else str(lmdb),
        **solver.data_feed,
        "losses": losses,
    }
