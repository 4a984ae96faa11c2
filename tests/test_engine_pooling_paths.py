"""Pooling's two paths give Caffe's pooling: PyTorch's own padded/ceil-mode pooling where its
geometry equals Caffe's, explicit padding elsewhere.

The golden cases prove the native path on the geometries real Caffe was run on; here both paths
are checked against a loop transcription of Caffe's `pooling_layer.cpp` (output size, window
clipping, AVE divisor, first maximum wins) on geometries that take each path, forward and
backward, in both memory layouts.
"""

from __future__ import annotations

import math

import pytest
import torch

from replicate.io.prototxt import parse_text
from replicate.layers.base import layer_class
from replicate.proto import caffe_pb2


def _caffe_pool(x: torch.Tensor, method: str, k: int, s: int, p: int, ceil: bool) -> torch.Tensor:
    """Caffe's forward, written from pooling_layer.cpp with plain loops (autograd gives the
    backward: the selected maximum, or 1/pool_size of every element of the window)."""
    n, c, h, w = x.shape

    def size(extent: int) -> int:
        ratio = (extent + 2 * p - k) / s
        out = (math.ceil(ratio) if ceil else math.floor(ratio)) + 1
        if p and (out - 1) * s >= extent + p:
            out -= 1
        return out

    oh, ow = size(h), size(w)
    rows = []
    for ph in range(oh):
        cols = []
        for pw in range(ow):
            hs, ws = ph * s - p, pw * s - p
            if method == "MAX":
                he, we = min(hs + k, h), min(ws + k, w)
                hs, ws = max(hs, 0), max(ws, 0)
                window = x[:, :, hs:he, ws:we].reshape(n, c, -1)
                # First maximum in row-major order: Caffe's strict '>' scan.
                best = torch.zeros(n, c, dtype=torch.long)
                for i in range(1, window.shape[2]):
                    better = window[:, :, i] > window.gather(2, best[..., None])[..., 0]
                    best = torch.where(better, torch.full_like(best, i), best)
                cols.append(window.gather(2, best[..., None])[..., 0])
            else:
                he, we = min(hs + k, h + p), min(ws + k, w + p)
                pool_size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                cols.append(x[:, :, hs:he, ws:we].sum(dim=(2, 3)) / pool_size)
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2)


def _layer(method: str, k: int, s: int, p: int, ceil: bool, shape: tuple[int, ...]):
    mode = "CEIL" if ceil else "FLOOR"
    text = (f'name: "p" type: "Pooling" top: "t" pooling_param {{ pool: {method} kernel_size: {k} '
            f"stride: {s} pad: {p} round_mode: {mode} }}")
    param = parse_text(text, caffe_pb2.LayerParameter(), "<t>")
    return layer_class(param)(param, caffe_pb2.TRAIN, [shape])


# (method, kernel, stride, pad, ceil, height/width, path the layer must take)
GEOMETRIES = [
    ("MAX", 3, 2, 0, True, 6, "native"),  # CaffeNet's pooling, ceil rounding adds a clipped window
    ("MAX", 3, 2, 0, True, 13, "native"),
    ("MAX", 3, 2, 1, True, 8, "native"),
    ("AVE", 3, 2, 1, True, 8, "native"),  # window reaching into the far padding: divisor counts it
    ("AVE", 3, 2, 0, True, 6, "native"),
    ("AVE", 2, 2, 1, False, 7, "native"),
    ("MAX", 3, 1, 2, True, 5, "padded"),  # pad above half the kernel: PyTorch refuses it
    ("AVE", 3, 1, 2, True, 5, "padded"),
    ("AVE", 4, 3, 3, True, 7, "padded"),
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "_".join(map(str, g)))
def test_engine_pooling_paths_match_caffe(geometry: tuple, channels_last: bool) -> None:
    method, k, s, p, ceil, hw, path = geometry
    shape = (2, 3, hw, hw)
    layer = _layer(method, k, s, p, ceil, shape).double()
    assert layer.native == (path == "native")
    gen = torch.Generator().manual_seed(0)
    # Few distinct values, so windows hold ties and the first-maximum rule is exercised.
    x = torch.randint(-3, 4, shape, generator=gen).double()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours_in, ref_in = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, ref = layer(ours_in)[0], _caffe_pool(ref_in, method, k, s, p, ceil)
    assert tuple(ours.shape) == tuple(ref.shape) == tuple(layer.top_shapes[0])
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    top_diff = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ours.backward(top_diff)
    ref.backward(top_diff)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-12, atol=0)


def test_engine_pooling_paths_agree_where_both_apply() -> None:
    """On every small geometry the native path takes, explicit padding gives the same values
    and gradients (so the golden cases, which run the native path, vouch for both)."""
    gen = torch.Generator().manual_seed(1)
    checked = 0
    for method in ("MAX", "AVE"):
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(0, k // 2 + 1):
                    for ceil in (True, False):
                        for hw in (5, 6, 8):
                            shape = (1, 2, hw, hw + 1)
                            layer = _layer(method, k, s, p, ceil, shape).double()
                            if not layer.native:
                                continue
                            x = torch.randint(-3, 4, shape, generator=gen).double()
                            a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
                            ya, yb = layer(a)[0], layer.padded_pool(b)
                            torch.testing.assert_close(ya, yb, rtol=1e-12, atol=0)
                            g = torch.randn(ya.shape, generator=gen, dtype=torch.float64)
                            ya.backward(g)
                            yb.backward(g)
                            torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=0)
                            checked += 1
    assert checked > 60
