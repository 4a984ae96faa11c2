"""The whole transfer CaffeNet (conv1..conv3 frozen, `-new` layers above) against real Caffe.

Parameters are not stored: blob i of layer L is regenerated from the seed and scale in meta.json
exactly as the fixture's README describes.  Checked: the outputs, [sum, sum of squares] of the
intermediate blobs, and each parameter gradient at 2000 sampled indices plus its
[sum, sum of squares].  Frozen (lr_mult 0) layers must get exactly zero, as Caffe computes none,
unless the net has force_backward: then Caffe computes their gradients too.

A ReLU input within float32 rounding of 0 may land on the other side of the kink in another
arithmetic than Caffe's CPU one (this fixture has one: conv4-new, channel 67, -2.4e-7 here),
which moves the gradient of everything below it.  On the CPU our mask is Caffe's at every
position (checked with the plain mask alone, torch 2.14.1, 2026-12-06); cuDNN's sums on a GPU
may fall on the other side.  So the gradients are also computed with the ReLU mask flipped at
those positions, and each sampled value must match one of the two.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from golden_checks._compare import CPU, FORWARD_RTOL, GRADIENT_RTOL, assert_close, assert_every_blob, load_arrays, on
from replicate.io.prototxt import read_net_text
from replicate.net.compile import CompiledNet
from replicate.proto import caffe_pb2


def handles(case_name: str) -> bool:
    return case_name == "caffenet_full"


def _assert_moments(actual: torch.Tensor, expected: np.ndarray, rtol: float, what: str) -> None:
    """[sum, sum of squares] of a blob; the sum is judged against sqrt(n * sumsq), the scale its
    float32 rounding error grows with, since sums of signed values may cancel to near zero."""
    a = actual.detach().double()
    got = np.array([a.sum().item(), (a * a).sum().item()])
    scale = np.sqrt(a.numel() * max(float(expected[1]), 0.0))
    assert abs(got[0] - expected[0]) <= rtol * max(scale, 1e-30), f"{what} sum: {got[0]} vs {expected[0]}"
    assert abs(got[1] - expected[1]) <= rtol * max(abs(float(expected[1])), 1e-30), (
        f"{what} sum of squares: {got[1]} vs {expected[1]}"
    )


#: A ReLU input this close to 0 (relative to the blob's largest magnitude) is "at the kink".
KINK_RTOL = 1e-6


def _flip_kinks(module: torch.nn.Module, args: tuple, output: tuple) -> tuple:
    """Forward hook for ReLU: same values, gradient mask flipped where the input is at the kink."""
    (x,), (y,) = args, output
    at_kink = x.abs() <= KINK_RTOL * x.abs().max()
    delta = x - x.detach()
    return (y + torch.where(at_kink & (x <= 0), delta, 0.0) - torch.where(at_kink & (x > 0), delta, 0.0),)


def _param_grads(net: CompiledNet, inputs: dict[str, torch.Tensor], flip: bool) -> list[torch.Tensor]:
    hooks = [layer.register_forward_hook(_flip_kinks) for layer in net.layers if layer.type == "ReLU"] if flip else []
    try:
        result = net(inputs)
    finally:
        for h in hooks:
            h.remove()
    params = [p for ps in net.layer_blobs().values() for p in ps]
    learn = [p for p in params if p.requires_grad]
    grads = dict(zip(map(id, learn), torch.autograd.grad(result.loss, learn, allow_unused=True)))
    return [torch.zeros_like(p) if grads.get(id(p)) is None else grads[id(p)] for p in params]


def check(case_dir: Path, device: torch.device = CPU) -> None:
    arrays = load_arrays(case_dir)
    meta = json.loads((case_dir / "meta.json").read_text())
    net = CompiledNet(read_net_text(case_dir / "net.prototxt"), caffe_pb2.TEST)
    blobs = net.layer_blobs()
    with torch.no_grad():
        for key, spec in meta["weights"].items():
            layer, i = key.rsplit("/", 1)
            value = np.random.RandomState(spec["seed"]).standard_normal(spec["shape"]) * spec["scale"]
            blobs[layer][int(i)].copy_(torch.from_numpy(value.astype(np.float32)))
        if net.force_backward:
            # Caffe's force_backward sets param_propagate_down for every parameter.
            for params in blobs.values():
                for p in params:
                    p.requires_grad_(True)
    net.to(device)
    inputs = {k[3:]: torch.from_numpy(v).to(device) for k, v in arrays.items() if k.startswith("in/")}
    result = net(inputs)
    for key, expected in arrays.items():
        if key.startswith("out/"):
            assert_close(on(device, result.blobs[key[4:]]), expected, FORWARD_RTOL, key)
        elif key.startswith("outsum/"):
            _assert_moments(on(device, result.blobs[key[7:]]), expected, FORWARD_RTOL, key)
    for group in ("pdiffidx", "pdiffsample", "pdiffsum"):
        assert_every_blob(arrays, blobs, group)
    names = [f"{name}/{i}" for name, ps in blobs.items() for i in range(len(ps))]
    plain = _param_grads(net, inputs, flip=False)
    flipped = _param_grads(net, inputs, flip=True)
    for key, g, h in zip(names, plain, flipped):
        idx = torch.from_numpy(arrays[f"pdiffidx/{key}"].astype(np.int64)).to(device)
        expected = arrays[f"pdiffsample/{key}"]
        tol = GRADIENT_RTOL * max(float(np.abs(expected).max(initial=0.0)), 1e-30)
        a, b = (on(device, t).reshape(-1)[idx].double().cpu().numpy() for t in (g, h))
        ok = (np.abs(a - expected) <= tol) | (np.abs(b - expected) <= tol)
        assert ok.all(), (
            f"pdiffsample/{key}: {int((~ok).sum())} of {ok.size} sampled gradients differ by more "
            f"than {tol:.3g} with either ReLU mask at the kink"
        )
        try:
            _assert_moments(g, arrays[f"pdiffsum/{key}"], GRADIENT_RTOL, f"pdiffsum/{key}")
        except AssertionError:
            _assert_moments(h, arrays[f"pdiffsum/{key}"], GRADIENT_RTOL, f"pdiffsum/{key}")
