"""Writes golden cases of real Caffe for layer features that had none: BatchNorm (stored statistics
with a scale factor and eps in TEST, batch statistics in TRAIN), Scale (bias, axis/num_axes
variants, a second bottom), InnerProduct `transpose: true` and Pooling `round_mode: FLOOR`.

Each case is written twice, in the format of the other cases (`tests/golden/caffe/README.md`):
  tests/golden/caffe/<case>        as the original root was made: no force_backward, so Caffe
                                   skips every Backward and `diff/*`, `pdiff/*` are its zeros;
  tests/golden/caffe_grad/<case>   the same net with `force_backward: true` after its name line and
                                   other random values, so `diff/*`, `pdiff/*` are Caffe's real
                                   gradients of sum(topdiff * out).
Inputs and top diffs are float32 standard normal from `numpy.random.RandomState(seed)` (the seed is
in `meta.json`); learned parameters come from Caffe's fillers after `caffe.set_random_seed(seed)`;
BatchNorm's statistics (Caffe fills them with zeros) are set from the same numpy stream before the
forward pass, and `param/*` and `weights.caffemodel` (`Net::Save`) hold what the net held then.
A case whose forward writes its parameter blobs (BatchNorm with batch statistics) also stores them
after the forward pass as `after/<layer>/<i>`.  `meta.json` has the phase the net was built in
(`TRAIN` for `batchnorm_train`, else `TEST`).

Needs pycaffe: BVLC/caffe master, commit 9b891540183ddc834a02b2bd81b31afae71b2153, built from
source with CMake, CPU_ONLY, OpenBLAS, Python 3 (Debian 12's system python3 with its python3-numpy
and python3-protobuf; protobuf 3.21).  So it never runs in CI; its output is committed.

pycaffe's `caffe/io.py` imports scikit-image, which nothing here uses: install python3-skimage or
make that import optional in the copy of Caffe's source.

Run from the repo root (a second or two; CMake links `_caffe.so` into the source's python/):
  GLOG_minloglevel=2 PYTHONPATH=<caffe source>/python /usr/bin/python3 tools/caffe_goldens.py
`--root caffe` or `--root caffe_grad` writes one root only; `--cases a b` only those cases.  Only
the named case folders are replaced.
"""

from __future__ import annotations

import argparse
import json
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import caffe
from google.protobuf import text_format
from caffe.proto import caffe_pb2

CAFFE = "BVLC Caffe (master 9b89154, CMake CPU_ONLY build), CPU, float32"
#: Seeds per root: every case derives its own from these (other values in each root).
BASE_SEED = {"caffe": 8_000_000, "caffe_grad": 9_000_000}

Stats = Callable[[np.random.RandomState, caffe.Net], None]


def _input(name: str, *dims: int) -> str:
    shape = " ".join(f"dim: {d}" for d in dims)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {shape} }} }} }}\n'


def _layer(name: str, kind: str, bottoms: tuple[str, ...], top: str, params: str = "") -> str:
    bottom = " ".join(f'bottom: "{b}"' for b in bottoms)
    return f'layer {{ name: "{name}" type: "{kind}" {bottom} top: "{top}"{" " + params if params else ""} }}\n'


def bn_stats(spec: dict[str, tuple[float, float, float]]) -> Stats:
    """Sets each BatchNorm's blobs as Caffe stores them, sums scaled by the factor f:
    mean = m * f with m standard normal, variance = v * f with v uniform in [lo, hi)."""

    def fill(rng: np.random.RandomState, net: caffe.Net) -> None:
        for layer, (f, lo, hi) in spec.items():
            mean, var, factor = net.params[layer]
            mean.data[...] = (rng.standard_normal(mean.data.shape) * f).astype(np.float32)
            var.data[...] = (rng.uniform(lo, hi, var.data.shape) * f).astype(np.float32)
            factor.data[...] = np.float32(f)

    return fill


@dataclass
class Case:
    body: str
    note: str
    phase: str = "TEST"
    stats: Stats | None = None
    #: Input scale per blob (default 1).
    scale: dict[str, float] = field(default_factory=dict)


GAUSS = 'filler { type: "gaussian" std: 1 }'
GAUSS_BIAS = 'bias_filler { type: "gaussian" std: 1 }'

CASES: dict[str, Case] = {
    "batchnorm_global": Case(
        _input("data", 2, 3, 2, 3)
        + _input("data_eps", 2, 3, 2, 2)
        + _input("data_2d", 4, 5)
        + _input("data_nostats", 2, 2, 2, 2)
        + _layer("bn", "BatchNorm", ("data",), "out")
        + _layer("bn_eps", "BatchNorm", ("data_eps",), "out_eps", "batch_norm_param { eps: 0.05 }")
        + _layer("bn_2d", "BatchNorm", ("data_2d",), "out_2d", "batch_norm_param { use_global_stats: true }")
        + _layer("bn_nostats", "BatchNorm", ("data_nostats",), "out_nostats"),
        "TEST phase, so use_global_stats defaults to true: mean = blob0 / blob2 and variance = blob1 "
        "/ blob2 (scale factors 2.5, 0.5, 7, and 0, which Caffe reads as 'no statistics': mean and "
        "variance 0, so out = x / sqrt(eps)); bn_eps has variances 0.001-0.1 so its eps 0.05 matters; "
        "bn_2d normalises an (N, C) input; BatchNorm's backward leaves its blobs' diffs 0",
        stats=bn_stats({"bn": (2.5, 0.2, 2.0), "bn_eps": (0.5, 0.001, 0.1), "bn_2d": (7.0, 0.2, 2.0),
                        "bn_nostats": (0.0, 0.2, 2.0)}),
    ),
    "batchnorm_train": Case(
        _input("data", 3, 3, 2, 2)
        + _input("data_frac", 5, 2, 3)
        + _input("data_2d", 6, 4)
        + _input("data_global", 2, 3, 2, 2)
        + _layer("bn", "BatchNorm", ("data",), "out")
        + _layer("bn_frac", "BatchNorm", ("data_frac",), "out_frac",
                 "batch_norm_param { moving_average_fraction: 0.8 eps: 0.001 }")
        + _layer("bn_2d", "BatchNorm", ("data_2d",), "out_2d")
        + _layer("bn_global", "BatchNorm", ("data_global",), "out_global",
                 "batch_norm_param { use_global_stats: true }"),
        "TRAIN phase: bn, bn_frac and bn_2d normalise with the batch's mean and biased variance and "
        "update their blobs (factor <- f * factor + 1, mean <- batch mean + f * mean, variance <- "
        "m/(m-1) * batch variance + f * variance; after/* are the blobs after the forward pass); "
        "bn_frac normalises a 3-axis (N, C, W) input, bn_2d an (N, C) one from Caffe's zero "
        "statistics; bn_global uses its stored statistics in TRAIN (use_global_stats: true) and "
        "leaves them; inputs have mean 1.5 and scale 2",
        phase="TRAIN",
        stats=bn_stats({"bn": (2.0, 0.2, 2.0), "bn_frac": (1.5, 0.2, 2.0), "bn_2d": (0.0, 0.0, 0.0),
                        "bn_global": (3.0, 0.2, 2.0)}),
        scale={"*": 2.0},
    ),
    "scale_bias": Case(
        _input("data", 2, 3, 4, 4)
        + _layer("scale", "Scale", ("data",), "out", f"scale_param {{ bias_term: true {GAUSS} {GAUSS_BIAS} }}"),
        "Scale with a learned per-channel scale and bias (axis 1, num_axes 1: Caffe's Scale + Bias)",
    ),
    "scale_axes": Case(
        _input("data", 2, 3, 2, 5)
        + _layer("sc_hw", "Scale", ("data",), "out_hw",
                 f"scale_param {{ axis: 2 num_axes: 2 bias_term: true {GAUSS} {GAUSS_BIAS} }}")
        + _layer("sc_last", "Scale", ("data",), "out_last", f"scale_param {{ axis: -1 {GAUSS} }}")
        + _layer("sc_scalar", "Scale", ("data",), "out_scalar",
                 f"scale_param {{ num_axes: 0 bias_term: true {GAUSS} {GAUSS_BIAS} }}")
        + _layer("sc_chw", "Scale", ("data",), "out_chw", f"scale_param {{ num_axes: -1 {GAUSS} }}")
        + _layer("sc_all", "Scale", ("data",), "out_all", f"scale_param {{ axis: 0 num_axes: -1 {GAUSS} }}"),
        "learned Scale blobs of shape (2, 5) from axis 2 with a bias, (5,) from axis -1, a scalar "
        "(num_axes 0, zero-axis blobs, which Net::Save writes with no shape at all) with a bias, "
        "(3, 2, 5) from axis 1 and the whole input "
        "(axis 0, num_axes -1); all read the same input, so its gradient is their sum",
    ),
    "scale_two_bottom": Case(
        _input("data", 2, 3, 2, 4)
        + _input("s", 2, 3)
        + _input("s_c", 3, 2)
        + _input("s_scalar")
        + _layer("sc", "Scale", ("data", "s"), "out", f"scale_param {{ axis: 0 bias_term: true {GAUSS_BIAS} }}")
        + _layer("sc_c", "Scale", ("data", "s_c"), "out_c")
        + _layer("sc_scalar", "Scale", ("data", "s_scalar"), "out_scalar"),
        "the scale as a second bottom: (2, 3) from axis 0 with a learned bias of the same shape, "
        "(3, 2) from axis 1, and a zero-axis scalar blob (Caffe then uses axis 0 whatever axis says)",
    ),
    "ip_transpose": Case(
        _input("data", 2, 3, 4, 4)
        + _layer("ip", "InnerProduct", ("data",), "out",
                 'inner_product_param { num_output: 5 transpose: true '
                 'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "gaussian" std: 0.1 } }')
        + _layer("ip_axis2", "InnerProduct", ("data",), "out_axis2",
                 'inner_product_param { num_output: 3 transpose: true axis: 2 bias_term: false '
                 'weight_filler { type: "gaussian" std: 0.1 } }'),
        "transpose: true stores the weight as (K, N) = (48, 5); ip_axis2 flattens from axis 2 "
        "(K = 16, weight (16, 3), no bias, top (2, 3, 3))",
    ),
    "pool_max_floor": Case(
        _input("data", 1, 2, 8, 9)
        + _layer("pool", "Pooling", ("data",), "out",
                 "pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR }")
        + _layer("pool_pad", "Pooling", ("data",), "out_pad",
                 "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR }")
        + _layer("pool_rect", "Pooling", ("data",), "out_rect",
                 "pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 "
                 "pad_w: 1 round_mode: FLOOR }"),
        "round_mode FLOOR: 8x9 input, k3 s2 gives 3x4 (CEIL 4x4), k3 s2 pad 1 gives 4x5 (CEIL 5x5), "
        "kernel 3x2 stride 2x3 pad 1x1 gives 4x4 (CEIL 5x4); all read the same input",
    ),
    "pool_ave_floor": Case(
        _input("data", 1, 2, 8, 9)
        + _layer("pool", "Pooling", ("data",), "out",
                 "pooling_param { pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR }")
        + _layer("pool_pad", "Pooling", ("data",), "out_pad",
                 "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR }")
        + _layer("pool_rect", "Pooling", ("data",), "out_rect",
                 "pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 "
                 "pad_w: 1 round_mode: FLOOR }"),
        "as pool_max_floor with AVE: Caffe's divisor counts the padding inside the padded input "
        "(windows clipped at height + pad), so border windows divide by more than their real pixels",
    ),
}


def case_seed(name: str, root: str) -> int:
    return BASE_SEED[root] + zlib.crc32(name.encode()) % 1_000_000


def net_text(name: str, case: Case, force_backward: bool) -> str:
    text = f'name: "{name}"\n' + ("force_backward: true\n" if force_backward else "") + case.body
    assert text_format.Parse(text, caffe_pb2.NetParameter()).force_backward == force_backward
    return text


def input_names(net: caffe.Net) -> list[str]:
    return [net._blob_names[net._top_ids(i)[0]] for i, layer in enumerate(net.layers) if layer.type == "Input"]


def write_case(name: str, root: str, out_dir: Path) -> None:
    case = CASES[name]
    backward = root == "caffe_grad"
    seed = case_seed(name, root)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "net.prototxt").write_text(net_text(name, case, backward))
    caffe.set_random_seed(seed)  # the fillers draw from Caffe's own RNG
    phase = caffe.TRAIN if case.phase == "TRAIN" else caffe.TEST
    net = caffe.Net(str(out_dir / "net.prototxt"), phase)
    rng = np.random.RandomState(seed)

    arrays: dict[str, np.ndarray] = {}
    inputs = input_names(net)
    for blob in inputs:
        scale = case.scale.get(blob, case.scale.get("*", 1.0))
        shift = 1.5 if case.phase == "TRAIN" else 0.0
        value = (rng.standard_normal(net.blobs[blob].data.shape) * scale + shift).astype(np.float32)
        net.blobs[blob].data[...] = value
        arrays[f"in/{blob}"] = value
    if case.stats is not None:
        case.stats(rng, net)
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            arrays[f"param/{layer}/{i}"] = p.data.copy()
    if net.params:
        net.save(str(out_dir / "weights.caffemodel"))
    net.forward()
    outputs = list(net.outputs)
    for blob in outputs:
        arrays[f"out/{blob}"] = net.blobs[blob].data.copy()
    for layer, params in net.params.items():
        if any(not np.array_equal(p.data, arrays[f"param/{layer}/{i}"]) for i, p in enumerate(params)):
            for i, p in enumerate(params):
                arrays[f"after/{layer}/{i}"] = p.data.copy()
    for blob in outputs:
        grad = rng.standard_normal(net.blobs[blob].data.shape).astype(np.float32)
        net.blobs[blob].diff[...] = grad
        arrays[f"topdiff/{blob}"] = grad
    net.backward()  # without force_backward (root caffe) Caffe runs no layer's Backward
    for blob in inputs:
        arrays[f"diff/{blob}"] = net.blobs[blob].diff.copy()
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            arrays[f"pdiff/{layer}/{i}"] = p.diff.copy()
    np.savez_compressed(out_dir / "arrays.npz", **arrays)
    meta = {"phase": case.phase, "outputs": outputs, "caffe": CAFFE, "force_backward": backward, "seed": seed,
            "note": case.note}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--golden", type=Path, default=Path("tests/golden"), help="the folder holding the roots")
    ap.add_argument("--root", choices=sorted(BASE_SEED), nargs="+", default=sorted(BASE_SEED))
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    args = ap.parse_args()
    caffe.set_mode_cpu()
    for root in args.root:
        for name in args.cases:
            write_case(name, root, args.golden / root / name)
            print(f"{root}/{name}")


if __name__ == "__main__":
    main()
