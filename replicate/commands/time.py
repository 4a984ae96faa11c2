"""Benchmark a net's forward and backward passes layer by layer, like `caffe time`.

  python -m replicate time --model net.prototxt --iterations 10 [--phase TRAIN|TEST] [--device cpu|cuda]

Each layer runs on its own detached bottoms so its forward and its backward can be timed apart;
the per-layer table and the closing "Average Forward pass / Backward pass / Forward-Backward"
lines read as Caffe's do.  Input blobs hold random values; Data layers read their sources (paths
relative to the current directory, as in Caffe).  A first line names the device (the CPU model on
a CPU), the torch version and the thread count, so that a figure can be compared.

benchmarks/cpu_caffenet.py times the same forward+backward of CaffeNet as one autograd pass (as
training runs it, medians, wall and CPU time) instead of layer by layer (means, wall time only);
on one thread the two agree within the shared machine's noise.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import torch

from replicate.errors import ReplicateError
from replicate.io.prototxt import read_net_text
from replicate.net.compile import CompiledNet
from replicate.net.cpu_memory import keep_freed_memory
from replicate.proto import caffe_pb2
from replicate.solver.device import device_name
from replicate.solver.run import pick_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="net prototxt")
    parser.add_argument("--iterations", type=int, default=50, help="timed iterations (default 50)")
    parser.add_argument("--phase", choices=["TRAIN", "TEST"], default="TRAIN")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


@dataclass
class LayerTimes:
    forward: list[float] = field(default_factory=list)
    backward: list[float] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_inputs(net: CompiledNet) -> dict[str, torch.Tensor]:
    """Random values for Input layers' blobs; blobs some layer reads as labels hold 0, a valid
    class for any loss."""
    inputs = {}
    for i in net.input_layers:
        lp = net.layer_params[i]
        if lp.type != "Input":
            continue
        for top in net.top_names[i]:
            shape = net.blob_shapes[top]
            inputs[top] = torch.zeros(shape) if top in net.label_checks else torch.randn(shape)
    return inputs


def timed_pass(net: CompiledNet, inputs: dict[str, torch.Tensor], times: list[LayerTimes]) -> tuple[float, float]:
    """One forward and one backward, layer by layer; returns (forward ms, backward ms)."""
    device = net.device
    # Values are keyed by (layer, top) since an in-place top rebinds its blob name.
    produced: dict[str, tuple[int, int]] = {}
    values: dict[tuple[int, int], torch.Tensor] = {}
    records = []  # per layer: (leaf bottoms, where each came from, tops)
    forward_ms = 0.0
    plan = net.backward_plan
    for i, (lp, layer) in enumerate(zip(net.layer_params, net.layers)):
        sources = [produced[b] for b in lp.bottom]
        leaves = [
            values[produced[b]].detach().requires_grad_(need and values[produced[b]].is_floating_point())
            for b, need in zip(lp.bottom, plan.bottom_needs[i])
        ]
        _sync(device)
        start = time.perf_counter()
        if lp.bottom:
            tops = layer(*leaves)
        else:
            made = layer()
            tops = tuple(inputs.get(t, m).to(device) for t, m in zip(net.top_names[i], made))
        _sync(device)
        ms = (time.perf_counter() - start) * 1000
        times[i].forward.append(ms)
        forward_ms += ms
        if not lp.bottom:
            # As in training (CompiledNet.feed), untimed: a label out of a loss's range stops here.
            for name, value in zip(net.top_names[i], tops):
                net.check_labels(name, value)
        for j, (name, value) in enumerate(zip(net.top_names[i], tops)):
            produced[name] = (i, j)
            values[(i, j)] = value
        records.append((leaves, sources, tops))
    grads: dict[tuple[int, int], torch.Tensor] = {}
    backward_ms = 0.0
    for i in range(len(net.layers) - 1, -1, -1):
        leaves, sources, tops = records[i]
        params = [p for p in net.layers[i].blobs if p.requires_grad]
        outs, seeds = [], []
        for j, top in enumerate(tops):
            weight = net.loss_weights[i][j]
            seed = grads.get((i, j))
            if weight:
                w = torch.full_like(top, weight)
                seed = w if seed is None else seed + w
            if top.requires_grad:
                # caffe time runs every layer's Backward, on the zero diffs a top no loss reaches
                # holds: a deploy net's parameter gradients are timed too.
                outs.append(top)
                seeds.append(torch.zeros_like(top) if seed is None else seed)
        wrt = [leaf for leaf in leaves if leaf.requires_grad] + params
        _sync(device)
        start = time.perf_counter()
        if outs and wrt:
            got = torch.autograd.grad(outs, wrt, seeds, allow_unused=True)
            fed = [s for leaf, s in zip(leaves, sources) if leaf.requires_grad]
            for source, g in zip(fed, got):
                if g is not None:
                    grads[source] = g if source not in grads else grads[source] + g
        _sync(device)
        ms = (time.perf_counter() - start) * 1000
        times[i].backward.append(ms)
        backward_ms += ms
    return forward_ms, backward_ms


def run(args: argparse.Namespace) -> int:
    if args.iterations <= 0:
        raise ReplicateError(f"--iterations must be positive, got {args.iterations}")
    device = pick_device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    phase = caffe_pb2.TRAIN if args.phase == "TRAIN" else caffe_pb2.TEST
    net = CompiledNet(read_net_text(args.model), phase).to(device)
    inputs = random_inputs(net)
    times = [LayerTimes() for _ in net.layers]
    print(f"{device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("*** Benchmark begins ***")
    print(f"Testing for {args.iterations} iterations.")
    timed_pass(net, inputs, [LayerTimes() for _ in net.layers])  # warm-up, as Caffe's initial pass
    total_fwd = total_bwd = 0.0
    for it in range(1, args.iterations + 1):
        fwd, bwd = timed_pass(net, inputs, times)
        total_fwd += fwd
        total_bwd += bwd
        print(f"Iteration: {it} forward-backward time: {fwd + bwd:.3f} ms.")
    print("Average time per layer: ")
    width = max(len(n) for n in net.layer_names)
    for name, t in zip(net.layer_names, times):
        print(f"{name:>{width}}\tforward: {sum(t.forward) / len(t.forward):.5g} ms.")
        print(f"{name:>{width}}\tbackward: {sum(t.backward) / len(t.backward):.5g} ms.")
    n = args.iterations
    print(f"Average Forward pass: {total_fwd / n:.5g} ms.")
    print(f"Average Backward pass: {total_bwd / n:.5g} ms.")
    print(f"Average Forward-Backward: {(total_fwd + total_bwd) / n:.5g} ms.")
    print(f"Total Time: {total_fwd + total_bwd:.5g} ms.")
    print("*** Benchmark ends ***")
    return 0
