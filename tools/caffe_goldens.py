"""Writes golden cases of real Caffe for layer features that had none: BatchNorm (stored statistics
with a scale factor and eps in TEST, batch statistics in TRAIN), Scale (bias, axis/num_axes
variants, a second bottom), InnerProduct `transpose: true` and Pooling `round_mode: FLOOR`;
MultinomialLogisticLoss, SoftmaxWithLoss's normalization modes, ignore_label and axis, Softmax on
other axes, Accuracy with ignore_label and axis, Eltwise over three bottoms, Concat/Flatten axes
with Split and Silence, and shared parameters (`param { name }`); and the data paths that need
OpenCV in Caffe: the ImageData layer and the Data layer over encoded Datums.

Each case is written twice, in the format of the other cases (`tests/golden/caffe/README.md`):
  tests/golden/caffe/<case>        as the original root was made: no force_backward, so Caffe
                                   skips every Backward and `diff/*`, `pdiff/*` are its zeros;
  tests/golden/caffe_grad/<case>   the same net with `force_backward: true` after its name line and
                                   other random values, so `diff/*`, `pdiff/*` are Caffe's real
                                   gradients of sum(topdiff * out).
Inputs and top diffs are float32 standard normal from `numpy.random.RandomState(seed)` (the seed is
in `meta.json`; labels and probabilities are drawn from it as each case's `draw` says; a loss top
gets no top diff: it keeps the loss weight Caffe put there); learned parameters come from Caffe's fillers after `caffe.set_random_seed(seed)`;
BatchNorm's statistics (Caffe fills them with zeros) are set from the same numpy stream before the
forward pass, and `param/*` and `weights.caffemodel` (`Net::Save`) hold what the net held then.
A case whose forward writes its parameter blobs (BatchNorm with batch statistics) also stores them
after the forward pass as `after/<layer>/<i>`.  `meta.json` has the phase the net was built in
(`TRAIN` for `batchnorm_train`, else `TEST`).  `accuracy_ignore_axis` has no force_backward in
either root (Caffe's Accuracy aborts in its Backward).

Needs pycaffe: BVLC/caffe master, commit 9b891540183ddc834a02b2bd81b31afae71b2153, built from
source with CMake, CPU_ONLY, OpenBLAS, Python 3 (Debian 12's system python3 with its python3-numpy
and python3-protobuf; protobuf 3.21).  So it never runs in CI; its output is committed.

pycaffe's `caffe/io.py` imports scikit-image, which nothing here uses: install python3-skimage or
make that import optional in the copy of Caffe's source.

Data cases (`DATA_CASES`, root `caffe` only, as the solver cases): ImageData over an image list
and Data over LMDBs of encoded PNG and JPEG Datums, TEST phase, `out/batch{K}/<top>` after forward
K (`tests/golden/caffe/README.md`).  They need a pycaffe built with `-DUSE_OPENCV=ON` (the other
flags as above; Debian 12's libopencv-dev, OpenCV 4.6.0): this Caffe's sources name OpenCV 2/3's
`CV_LOAD_IMAGE_COLOR` / `CV_LOAD_IMAGE_GRAYSCALE`, which OpenCV 4 spells `cv::IMREAD_COLOR` /
`cv::IMREAD_GRAYSCALE` (src/caffe/util/io.cpp, layers/window_data_layer.cpp), so a copy of the
source is patched so before building.  The images are written with Pillow and the LMDBs with
py-lmdb (Debian's python3-pil and python3-lmdb), from the system python3 that runs pycaffe.

Run from the repo root (a second or two; CMake links `_caffe.so` into the source's python/):
  GLOG_minloglevel=2 PYTHONPATH=<caffe source>/python /usr/bin/python3 tools/caffe_goldens.py
`--root caffe` or `--root caffe_grad` writes one root only; `--cases a b` only those cases.  Only
the named case folders are replaced.
"""

from __future__ import annotations

import argparse
import io
import json
import os
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
CAFFE_OPENCV = "BVLC Caffe (master 9b89154, CMake CPU_ONLY build with USE_OPENCV, Debian 12 OpenCV 4.6.0), CPU, float32"
#: Seeds per root: every case derives its own from these (other values in each root).
BASE_SEED = {"caffe": 8_000_000, "caffe_grad": 9_000_000}

Stats = Callable[[np.random.RandomState, caffe.Net], None]
#: Draws one Input blob's value: (rng, shape) -> float32 array.
Draw = Callable[[np.random.RandomState, tuple[int, ...]], np.ndarray]


def _input(name: str, *dims: int) -> str:
    shape = " ".join(f"dim: {d}" for d in dims)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {shape} }} }} }}\n'


def _layer(name: str, kind: str, bottoms: tuple[str, ...], top: str, params: str = "") -> str:
    bottom = " ".join(f'bottom: "{b}"' for b in bottoms)
    return f'layer {{ name: "{name}" type: "{kind}" {bottom} top: "{top}"{" " + params if params else ""} }}\n'


def _floor_pools(pool: str) -> str:
    """Three `round_mode: FLOOR` poolings of one 8x9 input, where FLOOR and CEIL differ."""
    return (
        _input("data", 1, 2, 8, 9)
        + _layer("pool", "Pooling", ("data",), "out",
                 f"pooling_param {{ pool: {pool} kernel_size: 3 stride: 2 round_mode: FLOOR }}")
        + _layer("pool_pad", "Pooling", ("data",), "out_pad",
                 f"pooling_param {{ pool: {pool} kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR }}")
        + _layer("pool_rect", "Pooling", ("data",), "out_rect",
                 f"pooling_param {{ pool: {pool} kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 "
                 "pad_w: 1 round_mode: FLOOR }")
    )


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
    #: Input blobs drawn otherwise than standard normal (labels, probabilities).
    draw: dict[str, Draw] = field(default_factory=dict)
    #: Run without force_backward in both roots (Caffe's Accuracy aborts in its Backward).
    forward_only: bool = False


def labels(low: int, high: int) -> Draw:
    """Integer labels in [low, high) as float32 (low -1: some are the ignore label -1)."""
    return lambda rng, shape: rng.randint(low, high, size=shape).astype(np.float32)


def labels_with(high: int, value: int, at: tuple[int, ...]) -> Draw:
    """Integer labels in [0, high) with `value` (an ignore label) at the flat positions `at`, so
    every root has some."""

    def draw(rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
        out = rng.randint(0, high, size=shape).astype(np.float32)
        out.reshape(-1)[list(at)] = value
        return out

    return draw


def probabilities(rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform in [0.05, 1): positive, as a probability bottom must be (not normalised: Caffe's
    MultinomialLogisticLoss reads only the label's entry)."""
    return rng.uniform(0.05, 1.0, shape).astype(np.float32)


def probabilities_under_threshold(rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
    """As `probabilities`, but row 1 is exactly 0 and row 2 is 1e-25, both under Caffe's
    kLOG_THRESHOLD 1e-20, whatever the labels."""
    value = probabilities(rng, shape)
    value[1] = 0.0
    value[2] = 1e-25
    return value


def with_zeros(rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal with a quarter of the values exactly 0."""
    value = rng.standard_normal(shape).astype(np.float32)
    value[rng.rand(*shape) < 0.25] = 0.0
    return value


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
        _floor_pools("MAX"),
        "round_mode FLOOR: 8x9 input, k3 s2 gives 3x4 (CEIL 4x4), k3 s2 pad 1 gives 4x5 (CEIL 5x5), "
        "kernel 3x2 stride 2x3 pad 1x1 gives 4x4 (CEIL 5x4); all read the same input",
    ),
    "pool_ave_floor": Case(
        _floor_pools("AVE"),
        "as pool_max_floor with AVE: Caffe's divisor counts the padding inside the padded input "
        "(windows clipped at height + pad), so border windows divide by more than their real pixels",
    ),
    "pool_empty_window": Case(
        _input("data", 2, 3, 5, 9)
        + _layer("max", "Pooling", ("data",), "out_max", "pooling_param { pool: MAX kernel_size: 1 stride: 3 }")
        + _layer("ave", "Pooling", ("data",), "out_ave", "pooling_param { pool: AVE kernel_size: 1 stride: 3 }")
        + _layer("max_rect", "Pooling", ("data",), "out_max_rect",
                 "pooling_param { pool: MAX kernel_h: 2 kernel_w: 1 stride_h: 4 stride_w: 3 }"),
        "no padding and a stride wider than the kernel: ceil rounding keeps last windows that start "
        "past the image (k1 s3 on 5x9 gives 3x4: row 2 and column 3 hold no pixel; k2x1 s4x3 gives "
        "2x4, column 3 empty and row 1 cut to one row): Caffe's MAX leaves -FLT_MAX there; its AVE "
        "divides 0 by its window size clipped to the image, (5 - 6) x 1 = -1 in row 2 (-0) and "
        "0 in column 3 (NaN).  Forward only in both roots: Caffe's CPU MAX backward sends an empty "
        "window's gradient through the mask -1, to the pixel before the channel (outside the blob "
        "for the first)",
        forward_only=True,
    ),
    "multinomial_logistic_loss": Case(
        _input("prob", 4, 5)
        + _input("label", 4)
        + _input("prob_4d", 3, 2, 2, 2)
        + _input("label_4d", 3)
        + _input("prob_low", 4, 5)
        + _input("data", 4, 5)
        + _layer("mll", "MultinomialLogisticLoss", ("prob", "label"), "loss")
        + _layer("mll_4d", "MultinomialLogisticLoss", ("prob_4d", "label_4d"), "loss_4d", "loss_weight: 0.5")
        + _layer("mll_low", "MultinomialLogisticLoss", ("prob_low", "label"), "loss_low")
        + _layer("softmax", "Softmax", ("data",), "softmax")
        + _layer("mll_softmax", "MultinomialLogisticLoss", ("softmax", "label"), "loss_softmax", "loss_weight: 2"),
        "MultinomialLogisticLoss: -sum log(max(p[label], 1e-20)) / N over probabilities in [0.05, 1); "
        "mll_4d reads a (3, 2, 2, 2) bottom as 3 rows of 8 with loss_weight 0.5; prob_low has row 1 "
        "exactly 0 and row 2 1e-25, under the threshold, where Caffe's gradient is -weight / N / 1e-20 "
        "(it divides by the clamped probability); mll_softmax reads a Softmax (loss_weight 2); the "
        "label blob is shared by three layers",
        draw={"prob": probabilities, "prob_4d": probabilities, "prob_low": probabilities_under_threshold,
              "label": labels(0, 5), "label_4d": labels(0, 8)},
    ),
    "softmax_loss_norm": Case(
        _input("data_valid", 2, 4, 3)
        + _input("data_full", 2, 4, 3)
        + _input("data_batch", 2, 4, 3)
        + _input("data_none", 2, 4, 3)
        + _input("data_old_false", 2, 4, 3)
        + _input("data_old_true", 2, 4, 3)
        + _input("label", 2, 3)
        + _input("data_axis2", 2, 3, 4)
        + _input("label_axis2", 2, 3)
        + _layer("loss_valid", "SoftmaxWithLoss", ("data_valid", "label"), "loss_valid",
                 "loss_param { ignore_label: -1 }")
        + _layer("loss_full", "SoftmaxWithLoss", ("data_full", "label"), "loss_full",
                 "loss_param { ignore_label: -1 normalization: FULL }")
        + _layer("loss_batch", "SoftmaxWithLoss", ("data_batch", "label"), "loss_batch",
                 "loss_weight: 0.5 loss_param { ignore_label: -1 normalization: BATCH_SIZE }")
        + _layer("loss_none", "SoftmaxWithLoss", ("data_none", "label"), "loss_none",
                 "loss_param { ignore_label: -1 normalization: NONE }")
        + _layer("loss_old_false", "SoftmaxWithLoss", ("data_old_false", "label"), "loss_old_false",
                 "loss_param { ignore_label: -1 normalize: false }")
        + _layer("loss_old_true", "SoftmaxWithLoss", ("data_old_true", "label"), "loss_old_true",
                 "loss_param { ignore_label: -1 normalize: true }")
        + _layer("loss_axis2", "SoftmaxWithLoss", ("data_axis2", "label_axis2"), "loss_axis2",
                 "softmax_param { axis: 2 } loss_param { ignore_label: 0 }"),
        "SoftmaxWithLoss over (2, 4, 3) scores, classes on axis 1, labels (2, 3) with two -1 "
        "ignored: normalization VALID (the default), FULL (all 6 positions), BATCH_SIZE (2, with "
        "loss_weight 0.5), NONE, the deprecated normalize: false (BATCH_SIZE) and normalize: true "
        "(VALID); loss_axis2 takes classes on axis 2 (softmax_param axis) and ignores class 0.  (No "
        "second top: this Caffe aborts on any SoftmaxWithLoss with two, as its inner Softmax copies "
        "the layer's loss_weight list)",
        draw={"label": labels_with(4, -1, (1, 5)), "label_axis2": labels_with(4, 0, (2,))},
        scale={"*": 2.0},
    ),
    "softmax_axes": Case(
        _input("data", 2, 3, 4, 2)
        + _layer("sm_axis0", "Softmax", ("data",), "out_axis0", "softmax_param { axis: 0 }")
        + _layer("sm_axis2", "Softmax", ("data",), "out_axis2", "softmax_param { axis: 2 }")
        + _layer("sm_last", "Softmax", ("data",), "out_last", "softmax_param { axis: -1 }"),
        "Softmax over axis 0, axis 2 and axis -1 of one (2, 3, 4, 2) input (its gradient is the "
        "sum of the three)",
        scale={"*": 2.0},
    ),
    "accuracy_ignore_axis": Case(
        _input("data", 12, 5)
        + _input("label", 12)
        + _input("data_axis2", 2, 3, 6)
        + _input("label_axis2", 2, 3)
        + _layer("acc_ignore", "Accuracy", ("data", "label"), "acc_ignore", "accuracy_param { ignore_label: 1 }")
        + 'layer { name: "acc_ignore_k2" type: "Accuracy" bottom: "data" bottom: "label" top: "acc_ignore_k2" '
          'top: "per_class_k2" accuracy_param { top_k: 2 ignore_label: 1 } }\n'
        + _layer("acc_axis2", "Accuracy", ("data_axis2", "label_axis2"), "acc_axis2",
                 "accuracy_param { axis: 2 ignore_label: 5 }")
        + 'layer { name: "acc_axis2_k3" type: "Accuracy" bottom: "data_axis2" bottom: "label_axis2" '
          'top: "acc_axis2_k3" top: "per_class_axis2" accuracy_param { axis: 2 top_k: 3 } }\n',
        "Accuracy with ignore_label (class 1 of 5 ignored: the mean is over the other samples), top_k "
        "2 with the per-class accuracy as a second top (0 for the ignored class), and classes on axis "
        "2 of a (2, 3, 6) input with ignore_label 5 (a class); acc_axis2_k3 has no ignore_label, so "
        "there class 5 counts.  Forward only, in both roots (Caffe's Accuracy has no Backward)",
        draw={"label": labels_with(5, 1, (0, 3, 7)), "label_axis2": labels_with(6, 5, (4,))},
        forward_only=True,
    ),
    "eltwise_three": Case(
        _input("a", 2, 3, 2, 3)
        + _input("b", 2, 3, 2, 3)
        + _input("c", 2, 3, 2, 3)
        + _layer("sum_coeff", "Eltwise", ("a", "b", "c"), "sum_coeff",
                 "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }")
        + _layer("sum", "Eltwise", ("a", "b", "c"), "sum", "eltwise_param { operation: SUM }")
        + _layer("prod", "Eltwise", ("a", "b", "c"), "prod", "eltwise_param { operation: PROD }")
        + _layer("max", "Eltwise", ("a", "b", "c"), "max", "eltwise_param { operation: MAX }")
        + _layer("prod_default", "Eltwise", ("a", "c"), "prod_default"),
        "Eltwise over three bottoms: SUM with coefficients 1, -0.5, 2 and without; PROD, whose "
        "stable gradient (the default stable_prod_grad) is the product of the other bottoms, with a "
        "quarter of b exactly 0; MAX; prod_default has no eltwise_param (operation SUM is the "
        "default)",
        draw={"b": with_zeros},
    ),
    "concat_flatten_split": Case(
        _input("a", 2, 3, 2, 2)
        + _input("b", 1, 3, 2, 2)
        + _input("c", 2, 3, 2, 1)
        + _input("d", 2, 2, 3, 2)
        + _layer("cat0", "Concat", ("a", "b"), "cat0", "concat_param { axis: 0 }")
        + _layer("cat_last", "Concat", ("a", "c", "a"), "cat_last", "concat_param { axis: -1 }")
        + _layer("cat_dim", "Concat", ("a", "a"), "cat_dim", "concat_param { concat_dim: 2 }")
        + _layer("flat2", "Flatten", ("d",), "flat2", "flatten_param { axis: 2 }")
        + _layer("flat12", "Flatten", ("d",), "flat12", "flatten_param { axis: 1 end_axis: 2 }")
        + _layer("flat_neg", "Flatten", ("d",), "flat_neg", "flatten_param { axis: 0 end_axis: -2 }")
        + 'layer { name: "split" type: "Split" bottom: "c" top: "c1" top: "c2" }\n'
        + _layer("cat_split", "Concat", ("c1", "c2"), "cat_split", "concat_param { axis: 1 }")
        + 'layer { name: "silence" type: "Silence" bottom: "c2" bottom: "b" }\n',
        "Concat on axis 0 (batch 2 + 1), axis -1 over three bottoms (a twice), the deprecated "
        "concat_dim 2; Flatten from axis 2, axes 1..2 and axes 0..-2; an explicit Split whose "
        "tops feed a Concat and a Silence (Silence's Backward writes zeros, so c's gradient is the "
        "Split's sum of its tops' diffs and the implicit split's); a, c and d feed several layers, "
        "so their gradients sum over them",
    ),
    "backward_plan_readers": Case(
        _input("data", 4, 6)
        + _input("label", 4)
        + _layer("ip1", "InnerProduct", ("data",), "h",
                 'inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 } ' + GAUSS_BIAS + " }")
        + _layer("relu1", "ReLU", ("h",), "h")
        + _layer("frozen", "InnerProduct", ("h",), "f", "param { lr_mult: 0 } param { lr_mult: 0 } "
                 'inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 } ' + GAUSS_BIAS + " }")
        + _layer("ip2", "InnerProduct", ("f",), "s",
                 'inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } ' + GAUSS_BIAS + " }")
        + _layer("loss", "SoftmaxWithLoss", ("s", "label"), "loss")
        + _layer("acc", "Accuracy", ("s", "label"), "acc")
        + 'layer { name: "side" type: "Silence" bottom: "h" }\n'
        + _layer("aux", "InnerProduct", ("h",), "a", "propagate_down: false "
                 'inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } ' + GAUSS_BIAS + " }")
        + _layer("aux_loss", "SoftmaxWithLoss", ("a", "label"), "aux_loss", "loss_weight: 0.3")
        + _layer("sum", "Eltwise", ("h", "f"), "e", "loss_weight: 0.1")
        + _layer("cat", "Concat", ("h", "f"), "c", "concat_param { axis: 1 }"),
        "which layers run backward, decided on Caffe's split net: h is read by the frozen layer "
        "(lr_mult 0, which still passes h's gradient on), by a Silence, by aux (propagate_down: "
        "false, under aux_loss, loss_weight 0.3), by the Eltwise sum (loss_weight 0.1) and by the "
        "Concat cat (no loss: its top diff is not propagated); the scores s by the loss and by an "
        "Accuracy.  Every learned layer under a loss gets its gradient; aux's stops at its own "
        "parameters; no force_backward in either root (Caffe's Accuracy aborts in its Backward)",
        draw={"label": labels(0, 5)},
        forward_only=True,
    ),
    "shared_params": Case(
        _input("data", 3, 6)
        + _input("img", 2, 2, 5, 5)
        + 'layer { name: "ip_a" type: "InnerProduct" bottom: "data" top: "ip_a" param { name: "w" } '
          'param { name: "b" } inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 } '
          'bias_filler { type: "gaussian" std: 0.5 } } }\n'
        + 'layer { name: "ip_b" type: "InnerProduct" bottom: "ip_a" top: "ip_b" param { name: "w" lr_mult: 2 } '
          'param { name: "b" decay_mult: 0 } inner_product_param { num_output: 6 weight_filler { type: "gaussian" '
          'std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }\n'
        + 'layer { name: "ip_c" type: "InnerProduct" bottom: "data" top: "ip_c" param { name: "w" } '
          'param { name: "b" } inner_product_param { num_output: 6 } }\n'
        + 'layer { name: "conv_a" type: "Convolution" bottom: "img" top: "conv_a" param { name: "k" } '
          'convolution_param { num_output: 3 kernel_size: 3 bias_term: false weight_filler { type: "gaussian" '
          'std: 0.5 } } }\n'
        + 'layer { name: "conv_b" type: "Convolution" bottom: "img" top: "conv_b" param { name: "k" } '
          'convolution_param { num_output: 3 kernel_size: 3 stride: 2 bias_term: false } }\n'
        + _layer("loss_ip", "Eltwise", ("ip_b", "ip_c"), "ip_sum", "loss_weight: 0.5"),
        "shared parameters (param { name }): ip_a, ip_b (which reads ip_a) and ip_c (which reads "
        "the same data) share weight 'w' and bias 'b', conv_a and conv_b (another stride) share "
        "kernel 'k'; each blob's gradient is the sum over the layers using it (every pdiff of a "
        "shared blob is that sum); the fillers of the sharers are replaced by the owner's blob. "
        "ip_sum (an Eltwise SUM) has loss_weight 0.5, so even without force_backward Caffe runs "
        "the backward of the IP layers under it (root caffe has their parameter gradients)",
    ),
}


def case_seed(name: str, root: str) -> int:
    return BASE_SEED[root] + zlib.crc32(name.encode()) % 1_000_000


def net_text(name: str, case: Case, force_backward: bool) -> str:
    force_backward = force_backward and not case.forward_only
    text = f'name: "{name}"\n' + ("force_backward: true\n" if force_backward else "") + case.body
    assert text_format.Parse(text, caffe_pb2.NetParameter()).force_backward == force_backward
    return text


def input_names(net: caffe.Net) -> list[str]:
    return [net._blob_names[net._top_ids(i)[0]] for i, layer in enumerate(net.layers) if layer.type == "Input"]


def forward_and_record(net: caffe.Net, arrays: dict[str, np.ndarray], out_dir: Path) -> list[str]:
    """The parameters as the net holds them (`param/*`, and `weights.caffemodel` by Net::Save),
    then a forward pass and its outputs (`out/*`); returns the output blob names."""
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            arrays[f"param/{layer}/{i}"] = p.data.copy()
    if net.params:
        net.save(str(out_dir / "weights.caffemodel"))
    net.forward()
    outputs = list(net.outputs)
    for blob in outputs:
        arrays[f"out/{blob}"] = net.blobs[blob].data.copy()
    return outputs


def write_case(name: str, root: str, out_dir: Path, build: str = CAFFE) -> None:
    case = CASES[name]
    backward = root == "caffe_grad"
    seed = case_seed(name, root)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    text = net_text(name, case, backward)
    net_force_backward = text_format.Parse(text, caffe_pb2.NetParameter()).force_backward
    (out_dir / "net.prototxt").write_text(text)
    caffe.set_random_seed(seed)  # the fillers draw from Caffe's own RNG
    phase = caffe.TRAIN if case.phase == "TRAIN" else caffe.TEST
    net = caffe.Net(str(out_dir / "net.prototxt"), phase)
    rng = np.random.RandomState(seed)

    arrays: dict[str, np.ndarray] = {}
    inputs = input_names(net)
    for blob in inputs:
        shape = net.blobs[blob].data.shape
        if blob in case.draw:
            value = case.draw[blob](rng, shape)
        else:
            scale = case.scale.get(blob, case.scale.get("*", 1.0))
            shift = 1.5 if case.phase == "TRAIN" else 0.0
            value = (rng.standard_normal(shape) * scale + shift).astype(np.float32)
        net.blobs[blob].data[...] = value
        arrays[f"in/{blob}"] = value
    if case.stats is not None:
        case.stats(rng, net)
    outputs = forward_and_record(net, arrays, out_dir)
    for layer, params in net.params.items():
        if any(not np.array_equal(p.data, arrays[f"param/{layer}/{i}"]) for i, p in enumerate(params)):
            for i, p in enumerate(params):
                arrays[f"after/{layer}/{i}"] = p.data.copy()
    loss_weights = net.blob_loss_weights
    for blob in outputs:
        if loss_weights[blob] != 0:
            continue  # a loss top keeps the loss weight Caffe put into its diff at Net::Init
        grad = rng.standard_normal(net.blobs[blob].data.shape).astype(np.float32)
        net.blobs[blob].diff[...] = grad
        arrays[f"topdiff/{blob}"] = grad
    net.backward()  # without force_backward (root caffe) Caffe runs only the Backward of layers under a loss
    for blob in inputs:
        arrays[f"diff/{blob}"] = net.blobs[blob].diff.copy()
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            arrays[f"pdiff/{layer}/{i}"] = p.diff.copy()
    np.savez_compressed(out_dir / "arrays.npz", **arrays)
    meta = {"phase": case.phase, "outputs": outputs, "caffe": build, "force_backward": net_force_backward, "seed": seed,
            "note": case.note}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


# ------------------------------------------------------------------------------ solver cases
#: The net of the original root's solver cases ("small"), with `batch` samples a pass.
def small_net(batch: int) -> str:
    return (
        _input("data", batch, 3, 12, 12)
        + _input("label", batch)
        + 'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 decay_mult: 1 } '
        'param { lr_mult: 1 decay_mult: 1 }\n  convolution_param { num_output: 8 kernel_size: 3 stride: 1 '
        'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.1 } } }\n'
        'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
        'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n'
        'layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.01 beta: 0.75 } }\n'
        'layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2" param { lr_mult: 1 decay_mult: 1 } '
        'param { lr_mult: 2 decay_mult: 0 }\n  convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 2 '
        'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 1 } } }\n'
        'layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" param { lr_mult: 1 decay_mult: 1 } '
        'param { lr_mult: 2 decay_mult: 0 }\n  inner_product_param { num_output: 5 weight_filler { type: "gaussian" '
        'std: 0.05 } bias_filler { type: "constant" value: 0 } } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n'
    )


SHARED_NET = (
    _input("data", 8, 10)
    + _input("label", 8)
    + 'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" param { name: "w" } param { name: "b" }\n'
    '  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.3 } '
    'bias_filler { type: "constant" value: 0.1 } } }\n'
    'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }\n'
    'layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { name: "w" lr_mult: 2 decay_mult: 0.5 } '
    'param { name: "b" lr_mult: 0.5 decay_mult: 0 }\n  inner_product_param { num_output: 10 } }\n'
    'layer { name: "ip_side" type: "InnerProduct" bottom: "data" top: "ip_side" param { name: "w" } '
    'param { name: "b" }\n  inner_product_param { num_output: 10 } }\n'
    'layer { name: "sum" type: "Eltwise" bottom: "ip2" bottom: "ip_side" top: "sum" }\n'
    'layer { name: "relu2" type: "ReLU" bottom: "sum" top: "sum" }\n'
    'layer { name: "fc" type: "InnerProduct" bottom: "sum" top: "fc" param { lr_mult: 1 } '
    'param { lr_mult: 2 decay_mult: 0 }\n  inner_product_param { num_output: 5 weight_filler { type: "gaussian" '
    'std: 0.1 } bias_filler { type: "constant" value: 0 } } }\n'
    'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n'
)


@dataclass
class SolverCase:
    net: str
    #: solver.prototxt after its `net:` line.
    solver: str
    note: str
    classes: int = 5
    iters: int = 8


SOLVER_CASES: dict[str, SolverCase] = {
    "solver_sgd_iter_size": SolverCase(
        small_net(4),
        'base_lr: 0.05\nmomentum: 0.9\nweight_decay: 0.01\nlr_policy: "step"\ngamma: 0.5\nstepsize: 3\n'
        "iter_size: 2\nclip_gradients: 2\n",
        "iter_size 2: each update accumulates the gradients of two passes of 4 samples (batch{k}_0, "
        "batch{k}_1), clips the accumulated sum (clip_gradients 2, which scales it down at every "
        "update) and divides it by iter_size before weight decay and momentum",
    ),
    "solver_sgd_shared": SolverCase(
        SHARED_NET,
        'base_lr: 0.05\nmomentum: 0.9\nweight_decay: 0.01\nlr_policy: "step"\ngamma: 0.5\nstepsize: 3\n',
        "shared parameters: ip1, ip2 (reading ip1) and ip_side (reading data) share weight 'w' and "
        "bias 'b'; the owner ip1 sets no lr_mult/decay_mult, so ip2's (w: lr_mult 2, decay_mult 0.5; "
        "b: lr_mult 0.5, decay_mult 0) are the blobs' (Caffe's Net::AppendParam), and each blob is "
        "updated once from the sum of its three layers' gradients",
    ),
}


def write_solver_case(name: str, out_dir: Path) -> None:
    """Caffe's own Solver::Step, one update at a time, from seeded fillers.  Before the forward
    pass j of iteration k a `before_forward` callback at the first layer sets the Input blobs to
    batch{k}_j (standard normal data, labels uniform over the classes), so with iter_size > 1
    every pass sees its own batch; an `after_forward` callback at the last layer records the loss
    of each pass."""
    case = SOLVER_CASES[name]
    seed = case_seed(name, "caffe")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "net.prototxt").write_text(f'name: "{name}"\n' + case.net)
    solver_text = 'net: "net.prototxt"\n' + case.solver + f"max_iter: {case.iters}\nsnapshot: 0\ndisplay: 1\nsolver_mode: CPU\n"
    param = text_format.Parse(solver_text, caffe_pb2.SolverParameter())
    (out_dir / "solver.prototxt").write_text(solver_text)
    passes = max(1, param.iter_size)
    caffe.set_random_seed(seed)  # the fillers draw from Caffe's own RNG
    here = Path.cwd()
    os.chdir(out_dir)  # the solver's net: is relative to where Caffe runs
    try:
        solver = caffe.get_solver("solver.prototxt")
    finally:
        os.chdir(here)
    net = solver.net
    arrays: dict[str, np.ndarray] = {}
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            arrays[f"param/{layer}/{i}"] = p.data.copy()
    rng = np.random.RandomState(seed)
    at = {"k": 0, "j": 0}
    last = len(net.layers) - 1

    def feed(layer: int) -> None:
        if layer != 0:
            return
        k, j = at["k"], at["j"]
        data = rng.standard_normal(net.blobs["data"].data.shape).astype(np.float32)
        label = rng.randint(0, case.classes, size=net.blobs["label"].data.shape).astype(np.float32)
        net.blobs["data"].data[...] = data
        net.blobs["label"].data[...] = label
        arrays[f"batch{k}_{j}/data"], arrays[f"batch{k}_{j}/label"] = data, label

    def record(layer: int) -> None:
        if layer != last:
            return
        k, j = at["k"], at["j"]
        loss = np.array(net.blobs["loss"].data, dtype=np.float32).reshape(())
        arrays[f"loss{k}" if passes == 1 else f"loss{k}_{j}"] = loss
        at["j"] += 1

    net.before_forward(feed)
    net.after_forward(record)
    for k in range(1, case.iters + 1):
        at["k"], at["j"] = k, 0
        solver.step(1)
        assert at["j"] == passes, f"iteration {k} ran {at['j']} forward passes, not iter_size {passes}"
        for layer, params in net.params.items():
            for i, p in enumerate(params):
                arrays[f"step{k}/{layer}/{i}"] = p.data.copy()
    np.savez_compressed(out_dir / "arrays.npz", **arrays)
    batches = "batch{k}_0/*" if passes == 1 else "batch{k}_j/* (j < iter_size)"
    losses = "loss{k} = loss of the forward pass of iteration k" if passes == 1 else (
        "loss{k}_j = loss of forward pass j of iteration k")
    meta = {
        "iters": case.iters,
        "caffe": CAFFE,
        "seed": seed,
        "note": f"before forward pass j of iteration k the Input blobs were set to {batches}; param/* "
        "are initial values (Caffe fillers, caffe.set_random_seed(seed)); step{k}/* after the k-th "
        f"update; {losses}; batches from numpy RandomState(seed): per pass standard normal data, "
        "then labels uniform over the classes. " + case.note,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


# ------------------------------------------------------------------------------ data cases
#: An image to write: (file or record name, label, Pillow mode, height, width).  Pillow modes:
#: "RGB" (written as colour), "L" (grey), "RGBA", "LA" (grey with alpha), "P" (a palette of 16).
Image = tuple[str, int, str, int, int]


def _pixels(rng: np.random.RandomState, mode: str, height: int, width: int) -> np.ndarray:
    """A gradient plus noise (every grey level likely, neighbours differing as in a photo) of the
    mode's channel count, as uint8 H x W x C in the mode's own channel order (RGB, not BGR)."""
    channels = {"RGB": 3, "L": 1, "RGBA": 4, "LA": 2, "P": 1}[mode]
    ramp = np.add.outer(np.arange(height) * 9, np.arange(width) * 5)[:, :, None]
    noise = rng.randint(0, 160, size=(height, width, channels))
    value = (ramp + noise + rng.randint(0, 256, size=channels)) % 256
    if mode == "P":
        value %= 16
    return value.astype(np.uint8)


def _encode(rng: np.random.RandomState, image: Image, fmt: str) -> bytes:
    """The image's file bytes: PNG (lossless, Pillow's encoder) or JPEG (Pillow, quality 90, 4:2:0
    chroma subsampling unless the name ends in `_444`)."""
    from PIL import Image as PILImage

    _, _, mode, height, width = image
    value = _pixels(rng, mode, height, width)
    pil = PILImage.fromarray(value[:, :, 0] if value.shape[2] == 1 else value, {"P": "L"}.get(mode, mode))
    if mode == "P":
        pil = pil.convert("P")
        pil.putpalette(list(rng.randint(0, 256, size=16 * 3).astype(np.uint8)))
    out = io.BytesIO()
    if fmt == "png":
        pil.save(out, format="PNG")
    else:
        pil.save(out, format="JPEG", quality=90, subsampling=0 if image[0].endswith("_444") else 2)
    return out.getvalue()


def _write_lmdb(path: Path, records: list[tuple[bytes, int]], names: list[str]) -> None:
    """Encoded Datums as convert_imageset --encoded stores an unresized file: the file's bytes,
    the label, `encoded: true` and no channels/height/width; keys %08d_<name> in list order."""
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 20, subdir=True)
    with env.begin(write=True) as txn:
        for i, ((data, label), name) in enumerate(zip(records, names)):
            datum = caffe_pb2.Datum(data=data, label=label, encoded=True)
            txn.put(f"{i:08d}_{name}".encode(), datum.SerializeToString())
    env.close()


@dataclass
class DataCase:
    #: Data layers (each a `layer { ... }` text; their sources and root folders relative to the case).
    body: str
    #: Image lists: list file -> its images (written under images/ as PNG).
    lists: dict[str, list[Image]] = field(default_factory=dict)
    #: LMDBs of encoded Datums: folder -> its images, and the encoding of all of them ("png", "jpg").
    lmdbs: dict[str, tuple[str, list[Image]]] = field(default_factory=dict)
    note: str = ""
    batches: int = 3


def _transform(crop: int = 0, means: tuple[float, ...] = (), scale: float = 1.0, extra: str = "") -> str:
    parts = ([f"crop_size: {crop}"] if crop else []) + [f"mean_value: {m:g}" for m in means]
    parts += ([f"scale: {scale:g}"] if scale != 1.0 else []) + ([extra] if extra else [])
    return "transform_param { " + " ".join(parts) + " }" if parts else ""


def _image_data(name: str, params: str, transform: str) -> str:
    return (f'layer {{ name: "{name}" type: "ImageData" top: "{name}" top: "{name}_label"\n'
            f'  {transform}\n  image_data_param {{ source: "list.txt" root_folder: "images/" {params} }} }}\n')


def _data(name: str, source: str, batch: int, transform: str) -> str:
    return (f'layer {{ name: "{name}" type: "Data" top: "{name}" top: "{name}_label"\n'
            f'  {transform}\n  data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}\n')


IMAGE_LIST: list[Image] = [
    ("a.png", 3, "RGB", 10, 12),
    ("b.png", 0, "RGB", 12, 10),
    ("grey c.png", 7, "L", 11, 13),  # a space in the name: Caffe splits a line at its last space
    ("d.png", 1, "RGBA", 9, 14),
    ("e.png", 5, "P", 12, 12),
]
MIXED: list[tuple[str, str]] = [("rgb", "RGB"), ("grey", "L"), ("rgba", "RGBA"), ("grey_alpha", "LA"), ("palette", "P")]

DATA_CASES: dict[str, DataCase] = {
    "data_image_list": DataCase(
        _image_data("resized", "batch_size: 3 new_height: 9 new_width: 11",
                    _transform(7, (104, 117, 123), 0.5))
        + _image_data("grey", "batch_size: 2 new_height: 14 new_width: 13 is_color: false",
                      _transform(0, (128,), 0.0078125))
        + _image_data("cropped", "batch_size: 4", _transform(8)),
        lists={"list.txt": IMAGE_LIST},
        note="ImageData in TEST over list.txt (5 PNGs of 4 sizes under images/: RGB, grey (its name has a "
        "space), RGBA and a 16-colour palette) with root_folder 'images/': `resized` reads colour "
        "(cv::imread IMREAD_COLOR: grey replicated, alpha dropped), resizes to 9x11 (cv::resize "
        "INTER_LINEAR: some images shrink, some grow), centre-crops 7, subtracts mean_value 104/117/123 "
        "and scales by 0.5, batch 3; `grey` reads grey (is_color false: libpng's RGB -> grey), resizes "
        "to 14x13, mean_value 128, scale 1/128, batch 2; `cropped` reads colour at each image's own "
        "size and centre-crops 8 (other offsets per size), batch 4; every layer wraps around the list "
        "within its batches; out/batchK/<top> = the tops after forward K",
    ),
    "data_encoded_png": DataCase(
        _data("native", "color_lmdb", 3, _transform(8, (104, 117, 123), 0.25))
        + _data("force_gray", "mixed_lmdb", 5, _transform(7, (127.5,), 0.5, "force_gray: true"))
        + _data("force_color", "mixed_lmdb", 2, _transform(8, (10, 20, 30), extra="force_color: true"))
        + _data("native_grey", "grey_lmdb", 2, _transform(8, (100,)))
        + _data("native_alpha", "alpha_lmdb", 2, _transform(8, (1, 2, 3, 4))),
        lmdbs={
            "color_lmdb": ("png", [(f"rgb{i}", i, "RGB", h, w) for i, (h, w) in
                                   enumerate([(10, 12), (12, 10), (11, 13), (9, 14), (12, 12)])]),
            "mixed_lmdb": ("png", [(n, i + 2, m, 10 + i % 3, 13 - i % 2) for i, (n, m) in enumerate(MIXED)]),
            "grey_lmdb": ("png", [("g0", 4, "L", 10, 12), ("g1", 6, "L", 12, 9), ("g2", 8, "L", 11, 11)]),
            "alpha_lmdb": ("png", [("rgba0", 1, "RGBA", 10, 12), ("grey_alpha", 2, "LA", 11, 9),
                                   ("rgba1", 3, "RGBA", 9, 10)]),
        },
        note="Data in TEST over LMDBs of encoded Datums (PNG file bytes, encoded: true, no shape, as "
        "convert_imageset --encoded stores an unresized file), images of several sizes, centre crops: "
        "`native` decodes natively (cv::imdecode flag -1) 5 RGB PNGs, mean_value 104/117/123, scale "
        "0.25, batch 3; `force_gray` and `force_color` read RGB, grey, RGBA, grey+alpha and palette "
        "PNGs as grey (mean_value 127.5, scale 0.5, batch 5) and as colour (mean_value 10/20/30, "
        "batch 2); `native_grey` natively decodes grey PNGs to one channel (mean_value 100); "
        "`native_alpha` natively decodes RGBA and grey+alpha PNGs (flag -1 keeps the alpha channel: 4 "
        "channels, grey+alpha as B = G = R plus alpha), mean_value 1/2/3/4; every "
        "layer wraps around its LMDB within its batches; out/batchK/<top> = the tops after forward K",
    ),
    "data_encoded_jpeg": DataCase(
        _data("native", "color_lmdb", 3, _transform(8, (104, 117, 123), 0.5))
        + _data("force_gray", "mixed_lmdb", 4, _transform(8, (128,), extra="force_gray: true"))
        + _data("force_color", "mixed_lmdb", 3, _transform(8, (10, 20, 30), 0.25, "force_color: true")),
        lmdbs={
            "color_lmdb": ("jpg", [("c0", 0, "RGB", 10, 12), ("c1_444", 1, "RGB", 13, 11),
                                   ("c2", 2, "RGB", 11, 13), ("c3", 3, "RGB", 16, 16)]),
            "mixed_lmdb": ("jpg", [("m0", 5, "RGB", 11, 12), ("m1", 6, "L", 12, 10),
                                   ("m2_444", 7, "RGB", 10, 10), ("m3", 8, "L", 9, 13)]),
        },
        note="Data in TEST over LMDBs of encoded Datums holding JPEG bytes (Pillow, quality 90; 4:2:0 "
        "chroma subsampling, 4:4:4 where the name ends in _444; odd sizes, so the chroma upsampling "
        "meets the edges), decoded by Caffe's OpenCV 4.6 with Debian 12's libjpeg-turbo 2.1.5: `native` "
        "decodes colour JPEGs natively, centre crop 8, mean_value 104/117/123, scale 0.5, batch 3; "
        "`force_gray` (mean_value 128, batch 4) and `force_color` (mean_value 10/20/30, scale 0.25, "
        "batch 3) read colour and grey JPEGs; out/batchK/<top> = the tops after forward K",
    ),
}


def write_data_case(name: str, out_dir: Path) -> None:
    """Writes the case's images (list files and images/, or LMDBs of encoded Datums), then runs
    Caffe's data layers in the TEST phase (no randomness: centre crops, no mirror, no shuffle)
    from inside the case folder, so the relative sources and root folders resolve there."""
    case = DATA_CASES[name]
    seed = case_seed(name, "caffe")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    for list_name, images in case.lists.items():
        (out_dir / "images").mkdir(exist_ok=True)
        for image in images:
            (out_dir / "images" / image[0]).write_bytes(_encode(rng, image, "png"))
        (out_dir / list_name).write_text("".join(f"{image[0]} {image[1]}\n" for image in images))
    for folder, (fmt, images) in case.lmdbs.items():
        records = [(_encode(rng, image, fmt), image[1]) for image in images]
        _write_lmdb(out_dir / folder, records, [f"{image[0]}.{fmt}" for image in images])
    (out_dir / "net.prototxt").write_text(f'name: "{name}"\n' + case.body)
    here = Path.cwd()
    os.chdir(out_dir)  # the prefetch threads read the images while the net runs
    arrays: dict[str, np.ndarray] = {}
    try:
        net = caffe.Net("net.prototxt", caffe.TEST)
        for k in range(1, case.batches + 1):
            net.forward()
            for blob in net.outputs:
                arrays[f"out/batch{k}/{blob}"] = net.blobs[blob].data.copy()
        del net  # joins the prefetch threads before leaving the folder
    finally:
        os.chdir(here)
    np.savez_compressed(out_dir / "arrays.npz", **arrays)
    meta = {"phase": "TEST", "batches": case.batches, "caffe": CAFFE_OPENCV, "seed": seed, "note": case.note}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--golden", type=Path, default=Path("tests/golden"), help="the folder holding the roots")
    ap.add_argument("--root", choices=sorted(BASE_SEED), nargs="+", default=sorted(BASE_SEED))
    ap.add_argument("--caffe-build", default=CAFFE,
                    help="the Caffe build that runs, as the layer cases' meta.json names it")
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES) + sorted(SOLVER_CASES) + sorted(DATA_CASES),
                    default=list(CASES) + list(SOLVER_CASES) + list(DATA_CASES))
    args = ap.parse_args()
    caffe.set_mode_cpu()
    for root in args.root:
        for name in args.cases:
            if name in SOLVER_CASES or name in DATA_CASES:
                if root != "caffe":
                    continue  # solver and data cases live in the original root only, as its other solver_*, data_*
                if name in DATA_CASES:
                    write_data_case(name, args.golden / root / name)
                else:
                    write_solver_case(name, args.golden / root / name)
            else:
                write_case(name, root, args.golden / root / name, args.caffe_build)
            print(f"{root}/{name}")


if __name__ == "__main__":
    main()
