"""Every registered layer type: builds from a minimal LayerParameter, its forward yields the
shapes it declared, and (where differentiable) its autograd gradient passes gradcheck in float64.

Forward values are proven against real Caffe by the golden cases; this proves the backward pass
is the true derivative of that forward, for every type, including the ones no golden case covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from replicate.errors import ReplicateError
from replicate.io.prototxt import parse_text
from replicate.layers.base import layer_class, registered_types
from replicate.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


@dataclass
class Spec:
    text: str  # LayerParameter body (name/type added)
    bottoms: list[tuple[int, ...]]
    labels: dict[int, int] | None = None  # bottom index -> number of classes (integer labels)
    grad: bool = True
    phase: int = TEST
    positive: bool = False  # bottoms must be positive (probabilities)


GAUSS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'
SPECS: dict[str, list[Spec]] = {
    "Input": [Spec('input_param { shape { dim: 2 dim: 3 } }', [], grad=False)],
    "Convolution": [
        Spec(f"convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2 {GAUSS} }}", [(2, 2, 5, 5)]),
        Spec(f"convolution_param {{ num_output: 2 kernel_h: 3 kernel_w: 2 dilation: 2 bias_term: false {GAUSS} }}", [(1, 2, 7, 6)]),
    ],
    "InnerProduct": [
        Spec(f"inner_product_param {{ num_output: 4 {GAUSS} }}", [(2, 3, 2, 2)]),
        Spec(f"inner_product_param {{ num_output: 3 axis: 2 transpose: true {GAUSS} }}", [(2, 2, 5)]),
    ],
    "ReLU": [Spec("relu_param { negative_slope: 0.1 }", [(2, 3, 4)]), Spec("", [(5,)])],
    "Sigmoid": [Spec("", [(2, 5)])],
    "TanH": [Spec("", [(2, 5)])],
    "Pooling": [
        Spec("pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }", [(1, 2, 7, 7)]),
        Spec("pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }", [(1, 2, 8, 8)]),
        Spec("pooling_param { pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR }", [(1, 2, 6, 6)]),
        Spec("pooling_param { pool: AVE global_pooling: true }", [(2, 2, 3, 4)]),
    ],
    "LRN": [
        Spec("lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }", [(2, 5, 3, 3)]),
        Spec("lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }", [(1, 2, 4, 4)]),
    ],
    "Dropout": [Spec("dropout_param { dropout_ratio: 0.3 }", [(3, 4)])],
    "Softmax": [Spec("softmax_param { axis: 1 }", [(2, 4, 3)])],
    "SoftmaxWithLoss": [
        Spec("", [(4, 5), (4,)], labels={1: 5}),
        Spec("loss_param { ignore_label: 1 normalization: FULL }", [(2, 3, 4), (2, 4)], labels={1: 3}),
    ],
    "MultinomialLogisticLoss": [Spec("", [(4, 5), (4,)], labels={1: 5}, positive=True)],
    "Accuracy": [Spec("accuracy_param { top_k: 2 }", [(6, 4), (6,)], labels={1: 4}, grad=False)],
    "Concat": [Spec("concat_param { axis: 1 }", [(2, 1, 3), (2, 2, 3)])],
    "Eltwise": [
        Spec("eltwise_param { operation: SUM coeff: 0.5 coeff: -2 }", [(2, 3), (2, 3)]),
        Spec("eltwise_param { operation: PROD }", [(2, 3), (2, 3), (2, 3)]),
        Spec("eltwise_param { operation: MAX }", [(2, 3), (2, 3), (2, 3)]),
    ],
    "Flatten": [Spec("flatten_param { axis: 1 end_axis: 2 }", [(2, 3, 4, 2)])],
    "Split": [Spec("", [(2, 3)])],
    "Silence": [Spec("", [(2, 3)], grad=False)],
    "BatchNorm": [Spec("", [(4, 3, 2, 2)], phase=TRAIN)],
    "Scale": [
        Spec('scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } }', [(2, 3, 2)]),
        Spec("scale_param { axis: 0 }", [(2, 3, 2), (2, 3)]),
    ],
}
#: Source layers that read files; their own tests build them on real LMDB/image fixtures.
FILE_SOURCES = {"Data", "ImageData"}
TOPS = {"Split": 2, "Silence": 0}


def _cases() -> list[tuple[str, int]]:
    return [(t, i) for t in registered_types() for i in range(max(1, len(SPECS.get(t, []))))]


def _param(type_name: str, spec: Spec) -> caffe_pb2.LayerParameter:
    tops = TOPS.get(type_name, 1)
    text = f'name: "l.{type_name}" type: "{type_name}" ' + " ".join(f'top: "t{j}"' for j in range(tops))
    return parse_text(f"{text} {spec.text}", caffe_pb2.LayerParameter(), "<spec>")


def _bottoms(spec: Spec, gen: torch.Generator) -> list[torch.Tensor]:
    out = []
    for j, shape in enumerate(spec.bottoms):
        if spec.labels and j in spec.labels:
            out.append(torch.randint(0, spec.labels[j], shape, generator=gen).double())
        elif spec.positive:
            out.append(torch.rand(shape, generator=gen, dtype=torch.float64) * 0.9 + 0.05)
        else:
            out.append(torch.randn(shape, generator=gen, dtype=torch.float64))
    return out


@pytest.mark.parametrize("type_name,index", _cases(), ids=lambda v: str(v))
def test_engine_layer_type_forward_and_gradcheck(type_name: str, index: int) -> None:
    if type_name in FILE_SOURCES:
        pytest.skip(f"{type_name} reads files; tested by the datastore tests")
    assert type_name in SPECS, f"registered type {type_name} has no minimal spec in this test"
    spec = SPECS[type_name][index]
    torch.manual_seed(0)
    param = _param(type_name, spec)
    layer = layer_class(param)(param, spec.phase, spec.bottoms).double()
    bottoms = _bottoms(spec, torch.Generator().manual_seed(1))
    tops = layer(*bottoms)
    assert [tuple(t.shape) for t in tops] == [tuple(s) for s in layer.top_shapes]
    if not spec.grad:
        return
    floats = [j for j in range(len(bottoms)) if not (spec.labels and j in spec.labels)]
    params = [p for p in layer.blobs if p.requires_grad]

    def run(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args = list(bottoms)
        for j, x in zip(floats, xs[: len(floats)]):
            args[j] = x
        return tuple(layer(*args))

    xs = [bottoms[j].clone().requires_grad_(True) for j in floats]
    assert torch.autograd.gradcheck(run, (*xs, *params), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_engine_unknown_type_names_layer_type_and_supported() -> None:
    param = parse_text('name: "weird" type: "Nope"', caffe_pb2.LayerParameter(), "<t>")
    with pytest.raises(ReplicateError, match=r"layer 'weird' has unknown type 'Nope'.*Convolution"):
        layer_class(param)


def test_engine_dropout_scales_kept_units_in_train() -> None:
    param = _param("Dropout", SPECS["Dropout"][0])
    layer = layer_class(param)(param, TRAIN, [(1000, 10)])
    y = layer(torch.ones(1000, 10))[0]
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert 0.6 < kept.float().mean().item() < 0.8


def _layer(text: str, phase: int, bottoms: list[tuple[int, ...]], tops: int = 1):
    param = parse_text(text + " " + " ".join(f'top: "t{j}"' for j in range(tops)), caffe_pb2.LayerParameter(), "<t>")
    return layer_class(param)(param, phase, bottoms)


def test_engine_batchnorm_running_sums_follow_caffe() -> None:
    train = _layer('name: "bn" type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.5 }', TRAIN, [(4, 2, 3)])
    x1, x2 = torch.randn(4, 2, 3), torch.randn(4, 2, 3) * 3 + 1
    for x in (x1, x2):
        y = train(x)[0]
    m = 12
    mean = lambda x: x.mean(dim=(0, 2))  # noqa: E731
    var = lambda x: x.var(dim=(0, 2), unbiased=False)  # noqa: E731
    torch.testing.assert_close(train.blobs[2].detach(), torch.tensor([1.5]))
    torch.testing.assert_close(train.blobs[0].detach(), mean(x2) + 0.5 * mean(x1))
    torch.testing.assert_close(train.blobs[1].detach(), (var(x2) + 0.5 * var(x1)) * m / (m - 1))
    torch.testing.assert_close(y, (x2 - mean(x2)[:, None]) / torch.sqrt(var(x2)[:, None] + 1e-5))
    test = _layer('name: "bn" type: "BatchNorm"', TEST, [(4, 2, 3)])
    with torch.no_grad():
        for mine, theirs in zip(test.blobs, train.blobs):
            mine.copy_(theirs)
    s = 1 / 1.5
    expected = (x1 - train.blobs[0].detach()[:, None] * s) / torch.sqrt(train.blobs[1].detach()[:, None] * s + 1e-5)
    torch.testing.assert_close(test(x1)[0], expected)


def test_engine_batchnorm_forces_lr_mult_zero_like_caffe() -> None:
    param = parse_text('name: "bn" type: "BatchNorm" top: "t0"', caffe_pb2.LayerParameter(), "<t>")
    layer_class(param)(param, TRAIN, [(2, 3)])
    assert [p.lr_mult for p in param.param] == [0.0, 0.0, 0.0]
    bad = parse_text('name: "bn" type: "BatchNorm" top: "t0" param { lr_mult: 1 }', caffe_pb2.LayerParameter(), "<t>")
    with pytest.raises(ReplicateError, match="'bn'.*statistics"):
        layer_class(bad)(bad, TRAIN, [(2, 3)])


def test_engine_accuracy_ignore_label_and_per_class_top() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    # right, wrong, ignored, tie won (the higher class index ranks first), tie lost
    labels = torch.tensor([0.0, 0.0, 2.0, 1.0, 0.0])
    acc = _layer('name: "a" type: "Accuracy" accuracy_param { ignore_label: 2 }', TEST, [(5, 3), (5,)], tops=2)
    total, per_class = acc(scores, labels)
    torch.testing.assert_close(total, torch.tensor(2 / 4))
    torch.testing.assert_close(per_class, torch.tensor([1 / 3, 1.0, 0.0]))


def test_engine_multinomial_logistic_loss_is_2014_accuracy_logprob() -> None:
    """Mean over samples of -log(max(p_true, 1e-20)): the 2014 Accuracy layer's second output."""
    layer = _layer('name: "lp" type: "MultinomialLogisticLoss"', TEST, [(2, 3), (2,)])
    prob = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    (loss,) = layer(prob, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(loss, torch.tensor((-math.log(0.5) - math.log(1e-20)) / 2))


def test_engine_every_loss_type_defaults_to_loss_weight_one() -> None:
    for type_name in registered_types():
        if type_name.endswith("Loss"):
            assert layer_class(_param(type_name, SPECS[type_name][0])).default_loss_weight == 1.0


@pytest.mark.parametrize("channels_last", [False, True])
def test_engine_max_pooling_ties_send_gradient_to_first_in_window(channels_last: bool) -> None:
    """Caffe keeps the first maximum in row-major window order (strict >), so should we."""
    pool = _layer('name: "p" type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }', TEST, [(1, 1, 2, 4)])
    x = torch.tensor([[[[1.0, 1.0, 0.0, 2.0], [1.0, 0.5, 2.0, 2.0]]]])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    pool(x)[0].sum().backward()
    assert x.grad.tolist() == [[[[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]]]


@pytest.mark.parametrize("channels, size, stride, pad, bias", [
    (3, (6, 8), "stride: 2", 0, "false"),     # geometries where PyTorch's own computes wrong
    (2, (12, 12), "stride: 3", 0, "false"),
    (4, (16, 12), "stride: 4", 0, "false"),
    (3, (7, 9), "stride_h: 2 stride_w: 3", 1, "true"),
])
def test_engine_strided_1x1_convolution_on_the_cpu_gives_the_true_gradients(channels, size, stride, pad, bias) -> None:
    """A 1x1 convolution with a stride and no bias, on a channels-last CPU input of few channels:
    PyTorch's own (oneDNN, torch 2.11-2.14) gets the weight gradient wrong with two threads and
    corrupts the heap with one; the layer reads every s-th pixel and convolves with stride 1."""
    shape = (3, channels, *size)
    layer = _layer(f'name: "c" type: "Convolution" convolution_param {{ num_output: 8 kernel_size: 1 {stride} '
                   f'pad: {pad} bias_term: {bias} {GAUSS} }}', TRAIN, [shape])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # where PyTorch's own path computes a wrong gradient rather than crashing
    try:
        y = layer(x)[0]
        grads = torch.autograd.grad(y.square().sum(), [x, *layer.blobs])
    finally:
        torch.set_num_threads(threads)
    x64 = x.detach().double().requires_grad_(True)
    blobs64 = [b.detach().double().requires_grad_(True) for b in layer.blobs]
    y64 = torch.nn.functional.conv2d(x64, blobs64[0], blobs64[1] if len(blobs64) > 1 else None, layer.stride, layer.pad)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, torch.autograd.grad(y64.square().sum(), [x64, *blobs64]), strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_engine_eltwise_max_ties_follow_caffe() -> None:
    """Caffe: bottom 1 wins a tie with bottom 0 (a > b ? a : b); later bottoms need strictly more."""
    layer = _layer('name: "m" type: "Eltwise" eltwise_param { operation: MAX }', TEST, [(2,), (2,), (2,)])
    a, b, c = (torch.tensor(v, requires_grad=True) for v in ([1.0, 1.0], [1.0, 0.0], [1.0, 1.0]))
    layer(a, b, c)[0].sum().backward()
    assert (a.grad.tolist(), b.grad.tolist(), c.grad.tolist()) == ([0.0, 1.0], [1.0, 0.0], [0.0, 0.0])


def test_engine_concat_refuses_axis_and_concat_dim_together() -> None:
    # Caffe's ConcatLayer CHECKs "Either axis or concat_dim should be specified; not both".
    param = _param("Concat", Spec("concat_param { axis: 1 concat_dim: 0 }", []))
    with pytest.raises(ReplicateError, match=r"layer 'l.Concat' \(Concat\): give axis \(1\) or concat_dim \(0\), not both"):
        layer_class(param)(param, TEST, [(2, 1, 3), (2, 2, 3)])


def test_engine_layers_refuse_what_caffe_cannot_run_or_we_would_run_differently() -> None:
    cases = [
        # Caffe divides by group: 0 stops it (here: a ZeroDivisionError without this check).
        ("Convolution", "convolution_param { num_output: 2 kernel_size: 1 group: 0 }", [(1, 2, 3, 3)],
         "group must be positive"),
        # Caffe's unstable PROD gradient divides by each bottom; autograd's is the stable one.
        ("Eltwise", "eltwise_param { operation: PROD stable_prod_grad: false }", [(2,), (2,)],
         r"PROD with stable_prod_grad: false is not supported"),
        # Caffe runs dilation 0 (every tap reads one pixel); torch's convolution raised a RuntimeError.
        ("Convolution", "convolution_param { num_output: 2 kernel_size: 3 dilation: 0 }", [(1, 2, 5, 5)],
         r"dilation \(0, 0\) must be positive"),
        # Caffe's Blob::count CHECKs start <= end + 1; torch.flatten raised a RuntimeError.
        ("Flatten", "flatten_param { axis: 3 end_axis: 1 }", [(2, 3, 4, 5)], "end_axis 1 comes before axis 3"),
    ]
    for type_name, text, bottoms, message in cases:
        param = _param(type_name, Spec(text, bottoms))
        with pytest.raises(ReplicateError, match=rf"layer 'l.{type_name}' \({type_name}\): {message}"):
            layer_class(param)(param, TEST, bottoms)


def test_engine_flatten_end_axis_just_before_axis_inserts_an_axis_like_caffe() -> None:
    """end_axis = axis - 1 collapses no axes; Caffe (seen with pycaffe 9b89154) then inserts an
    axis of size 1 at `axis`: (2, 3, 4) with axis 2, end_axis 1 becomes (2, 3, 1, 4)."""
    layer = _layer('name: "f" type: "Flatten" flatten_param { axis: 2 end_axis: 1 }', TEST, [(2, 3, 4)])
    assert layer.top_shapes == [(2, 3, 1, 4)]
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(layer(x)[0], x.reshape(2, 3, 1, 4))
