"""Nets real Caffe computes with data that several blobs share (tools/caffe_readers.py): our engine
refuses them, and these checks prove from Caffe's numbers that it computes another net there
than the one its prototxt describes, and which.

- `memory_split_in_place`: an explicit Split's tops are their bottom's data, so the TanH computed
  in place on one changes the other: Caffe's loss is that of `ip` reading tanh(data), not data.
- `memory_chain_in_place`: the Sigmoid's backward reads its output, which the TanH computed in
  place on it has overwritten: Caffe's gradient of ip1 is the Sigmoid's backward taken at
  tanh(sigmoid(h)) instead of sigmoid(h); ip2's is the net's.
- `memory_ignored_propagate_down`, `memory_scale_product`: a Softmax or a Scale with
  `propagate_down: false` on a blob another layer reads still leaves a diff in its Split top
  (the Softmax's gradient, the Scale's product top_diff x h), which the Split adds to ip1's.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from golden_checks._compare import CPU, FORWARD_RTOL, GRADIENT_RTOL, assert_close, load_arrays
from replicate.errors import ReplicateError
from replicate.io.prototxt import read_net_text
from replicate.net.compile import CompiledNet
from replicate.proto import caffe_pb2

REFUSALS = {
    "memory_split_in_place": "whose data Caffe shares with 'data', 'sa'",
    "memory_chain_in_place": "its backward in Caffe reads its output 'g', which layer 't' (TanH)",
    "memory_ignored_propagate_down": "has propagate_down: false on bottom 'h', which Caffe's Softmax ignores",
    "memory_scale_product": "leaves the product top_diff x bottom in that bottom's diff",
}


#: Nothing of the engine computes here (a refusal, and Caffe's numbers checked by hand): the
#: GPU tier skips these cases.
DEVICE_FREE = True

def handles(case_name: str) -> bool:
    return case_name.startswith("memory_")


def _softmax_loss(scores: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(scores, label.long())


def check(case_dir: Path, device: torch.device = CPU) -> None:
    with pytest.raises(ReplicateError, match=re.escape(REFUSALS[case_dir.name])):
        net = CompiledNet(read_net_text(case_dir / "net.prototxt"), caffe_pb2.TRAIN)
        net.check_trainable()
    a = {k: torch.from_numpy(v).double() for k, v in load_arrays(case_dir).items()}
    data, label = a["in/data"], a["in/label"]
    if case_dir.name == "memory_split_in_place":
        scores = lambda x: x @ a["param/ip/0"].T + a["param/ip/1"]  # noqa: E731
        caffes = a["out/loss"].numpy()
        assert_close(_softmax_loss(scores(torch.tanh(data)), label), caffes, FORWARD_RTOL, "loss of ip on tanh(data)")
        natural = float(_softmax_loss(scores(data), label))
        assert abs(natural - float(caffes)) > 1e-3 * abs(float(caffes)), "the net's own loss is Caffe's"
        return
    if case_dir.name in ("memory_ignored_propagate_down", "memory_scale_product"):
        _check_ignored_propagate_down(case_dir.name, a)
        return
    w1 = a["param/ip1/0"].clone().requires_grad_(True)
    w2 = a["param/ip2/0"].clone().requires_grad_(True)
    t = torch.tanh(torch.sigmoid(data @ w1.T + a["param/ip1/1"]))
    t.retain_grad()
    _softmax_loss(t @ w2.T + a["param/ip2/1"], label).backward()
    assert_close(w2.grad, a["pdiff/ip2/0"].numpy(), GRADIENT_RTOL, "ip2's gradient, the net's")
    y = t.detach()
    caffes = t.grad * (1 - y**2) * y * (1 - y)  # TanH's backward, then Sigmoid's taken at y = tanh(g)
    assert_close(caffes.T @ data, a["pdiff/ip1/0"].numpy(), GRADIENT_RTOL, "ip1's gradient as Caffe computes it")
    natural = w1.grad.numpy()
    assert np.abs(natural - a["pdiff/ip1/0"].numpy()).max() > 1e-3 * np.abs(natural).max(), "Caffe's gradient is the net's"


def _check_ignored_propagate_down(name: str, a: dict[str, torch.Tensor]) -> None:
    """ip1's gradient as Caffe computes it: ip3's path, plus what the layer with propagate_down:
    false left in its Split top's diff (the Softmax's gradient of h, or the Scale's product
    top_diff x h); the net's, ip3's path alone, differs."""
    data, label = a["in/data"], a["in/label"]
    h = (data @ a["param/ip1/0"].T + a["param/ip1/1"]).requires_grad_(True)
    g = torch.softmax(h, dim=1) if name == "memory_ignored_propagate_down" else h * a["param/soft/0"]
    g.retain_grad()
    scores = g @ a["param/ip2/0"].T + a["param/ip2/1"] + h @ a["param/ip3/0"].T + a["param/ip3/1"]
    _softmax_loss(scores, label).backward(retain_graph=True)
    g_diff, h_diff = g.grad.clone(), h.grad.clone()  # (autograd.grad through g adds to g.grad again)
    through_g = torch.autograd.grad(g, h, g_diff)[0]  # the gradient g sends h
    nets = h_diff - through_g  # ip3's path alone, as the flag says
    caffes = nets + (through_g if name == "memory_ignored_propagate_down" else g_diff * h.detach())
    assert_close(caffes.T @ data, a["pdiff/ip1/0"].numpy(), GRADIENT_RTOL, "ip1's gradient as Caffe computes it")
    natural = (nets.T @ data).numpy()
    assert np.abs(natural - a["pdiff/ip1/0"].numpy()).max() > 1e-3 * np.abs(natural).max(), "Caffe's gradient is the net's"
