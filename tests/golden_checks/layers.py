"""Forward/backward golden cases: one small net per layer behaviour, run in the phase its
`meta.json` names (TEST but for `batchnorm_train`).

Parameters come from `weights.caffemodel` when the case has one (checked against the npz copy),
inputs from `in/*`; outputs must match `out/*`.  After the forward pass every parameter blob must
hold `after/<layer>/<i>` where the case has one (a forward that writes its blobs: BatchNorm with
batch statistics), else its `param/` value unchanged.  The backward pass starts from `topdiff/*` on
output blobs plus the net loss (loss tops carry Caffe's loss weight), and input and parameter
gradients must match `diff/*` and `pdiff/*`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from golden_checks._compare import CPU, FORWARD_RTOL, GRADIENT_RTOL, assert_close, assert_every_blob, load_arrays, on
from replicate.io.model import load_caffemodel
from replicate.io.prototxt import read_net_text
from replicate.net.compile import CompiledNet
from replicate.net.weights import copy_trained_layers
from replicate.proto import caffe_pb2

_OTHER_FAMILIES = ("solver_", "data_", "loss_reader_", "memory_", "refused_", "convert_imageset/")
_SPECIAL = {"caffenet_full", "caffemodel_v1"}


def handles(case_name: str) -> bool:
    return case_name not in _SPECIAL and not case_name.startswith(_OTHER_FAMILIES)


def _load_params(net: CompiledNet, arrays: dict[str, np.ndarray], case_dir: Path) -> None:
    """From weights.caffemodel through io's Caffe-style copy when the case has one (it must
    equal the npz copy), else from the npz."""
    blobs = net.layer_blobs()
    assert_every_blob(arrays, blobs, "param")
    model = case_dir / "weights.caffemodel"
    if model.exists():
        copy_trained_layers(blobs, load_caffemodel(model))
    for layer, params in blobs.items():
        for i, blob in enumerate(params):
            expected = arrays[f"param/{layer}/{i}"]
            if model.exists():
                np.testing.assert_array_equal(blob.detach().cpu().numpy(), expected, err_msg=f"caffemodel blob {layer}/{i}")
            else:
                with torch.no_grad():
                    blob.copy_(torch.from_numpy(expected))


def check(case_dir: Path, device: torch.device = CPU, prepare: Callable[[CompiledNet], object] | None = None) -> None:
    """`prepare` is called with the net before it runs (to switch on an engine option)."""
    arrays = load_arrays(case_dir)
    phase = json.loads((case_dir / "meta.json").read_text())["phase"]
    net = CompiledNet(read_net_text(case_dir / "net.prototxt"), caffe_pb2.Phase.Value(phase))
    _load_params(net, arrays, case_dir)
    if prepare is not None:
        prepare(net)
    net.to(device)
    if net.force_backward:
        # Caffe's force_backward sets param_propagate_down for every parameter, frozen (lr_mult
        # 0) ones included; the engine leaves those without grad, so ask for them here.
        for params in net.layer_blobs().values():
            for p in params:
                p.requires_grad_(True)
    plan = net.backward_plan
    inputs = {
        k[3:]: torch.tensor(v, dtype=torch.float32, device=device, requires_grad=plan.blob_gets_diff[k[3:]])
        for k, v in arrays.items() if k.startswith("in/")
    }
    result = net(inputs)
    # An output of Caffe's may be a Split's top (a weighted top another layer reads): its blob's value.
    values = {name: result.blobs[net.output_blobs.get(name, name)]
              for name in {k.split("/", 1)[1] for k in arrays if k.startswith(("out/", "topdiff/"))}}
    for key, expected in arrays.items():
        if key.startswith("out/"):
            assert_close(on(device, values[key[4:]]), expected, FORWARD_RTOL, key)
    for layer, params in net.layer_blobs().items():
        for i, blob in enumerate(params):
            key = f"after/{layer}/{i}" if f"after/{layer}/{i}" in arrays else f"param/{layer}/{i}"
            assert_close(on(device, blob.detach()), arrays[key], FORWARD_RTOL, f"{key} after the forward pass")
    assert {k for k in arrays if k.startswith("after/")} <= {
        f"after/{layer}/{i}" for layer, params in net.layer_blobs().items() for i in range(len(params))
    }, "after/ blobs the net lacks"

    # Caffe computes a gradient only where its backward plan says so (without force_backward
    # input diffs stay zero and layers not under a loss skip backward).
    zero, wanted = [], []
    for k in arrays:
        if k.startswith("diff/"):
            (wanted if inputs[k[5:]].requires_grad else zero).append((k, inputs[k[5:]]))
    needs = dict(zip(net.layer_names, plan.layer_needs))
    params = net.layer_blobs()
    for k in arrays:
        if k.startswith("pdiff/"):
            _, layer, i = k.split("/")
            p = params[layer][int(i)]
            (wanted if needs[layer] and p.requires_grad else zero).append((k, p))
    for key, tensor in zero:
        assert_close(torch.zeros_like(tensor), arrays[key], GRADIENT_RTOL, key)
    if not wanted:
        return
    total = result.loss
    for key, grad in arrays.items():
        if key.startswith("topdiff/"):
            total = total + (values[key[8:]] * torch.from_numpy(grad).to(device)).sum()
    grads = torch.autograd.grad(total, [t for _, t in wanted], allow_unused=True)
    for (key, tensor), grad in zip(wanted, grads):
        got = torch.zeros_like(tensor) if grad is None else grad
        assert_close(on(device, got), arrays[key], GRADIENT_RTOL, key)
