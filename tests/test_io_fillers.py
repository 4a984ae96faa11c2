"""Caffe's fillers: distributions, fan arithmetic, sparse masks, the bilinear kernel."""

import math

import numpy as np
import pytest
import torch

from replicate.errors import ReplicateError
from replicate.layers.fillers import fill
from replicate.proto import caffe_pb2

F = caffe_pb2.FillerParameter


def _filled(shape: tuple[int, ...], **kw) -> torch.Tensor:
    return fill(torch.empty(shape), F(**kw), torch.Generator().manual_seed(0))


def test_constant() -> None:
    assert torch.all(_filled((3, 4), type="constant", value=0.25) == 0.25)


def test_gaussian_mean_and_std() -> None:
    t = _filled((400, 500), type="gaussian", mean=0.5, std=0.01)
    assert abs(t.mean().item() - 0.5) < 1e-4
    assert abs(t.std().item() - 0.01) < 1e-4


def test_gaussian_sparse_keeps_sparse_inputs_per_output_on_average() -> None:
    t = _filled((100, 2000), type="gaussian", std=1.0, sparse=15)
    nonzero_per_output = (t != 0).sum().item() / 100
    # Caffe keeps each weight with probability sparse / num_outputs (100 here): 0.15 * 2000 = 300.
    assert abs(nonzero_per_output - 300) < 10


def test_uniform_limits() -> None:
    t = _filled((100_000,), type="uniform", min=-2.0, max=3.0)
    assert t.min().item() >= -2.0 and t.max().item() <= 3.0
    assert abs(t.mean().item() - 0.5) < 0.03


@pytest.mark.parametrize(
    "norm, n", [(F.FAN_IN, 3 * 5 * 5), (F.FAN_OUT, 64 * 5 * 5), (F.AVERAGE, (75 + 1600) / 2)]
)
def test_xavier_scale_from_caffe_fans(norm: int, n: float) -> None:
    t = _filled((64, 3, 5, 5), type="xavier", variance_norm=norm)
    bound = math.sqrt(3.0 / n)
    assert t.abs().max().item() <= bound
    assert t.abs().max().item() > 0.95 * bound


@pytest.mark.parametrize("norm, n", [(F.FAN_IN, 200), (F.FAN_OUT, 300), (F.AVERAGE, 250)])
def test_msra_std_from_caffe_fans(norm: int, n: float) -> None:
    t = _filled((300, 200), type="msra", variance_norm=norm)
    assert abs(t.std().item() - math.sqrt(2.0 / n)) < 0.02 * math.sqrt(2.0 / n)


def test_positive_unitball_rows_sum_to_one() -> None:
    t = _filled((7, 3, 4), type="positive_unitball")
    assert torch.all(t >= 0)
    torch.testing.assert_close(t.view(7, -1).sum(1), torch.ones(7))


def _caffe_bilinear(shape: tuple[int, int, int, int]) -> torch.Tensor:
    """BilinearFiller::Fill of Caffe's filler.hpp, element by element in float32."""
    width = shape[3]
    f = math.ceil(width / 2.0)
    c = np.float32((width - 1) / (2.0 * f))
    out = np.empty(math.prod(shape), dtype=np.float32)
    for i in range(out.size):
        x = np.float32(i % width)
        y = np.float32((i // width) % shape[2])
        out[i] = (np.float32(1) - abs(x / np.float32(f) - c)) * (np.float32(1) - abs(y / np.float32(f) - c))
    return torch.from_numpy(out.reshape(shape))


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 8, 16])
def test_bilinear_kernel_is_caffes(width: int) -> None:
    shape = (3, 2, width, width)
    assert torch.equal(_filled(shape, type="bilinear"), _caffe_bilinear(shape))


def test_bilinear_odd_kernel_is_symmetric() -> None:
    # f = 2, c = (3 - 1) / 4 = 0.5: the 3-tap kernel is 0.5, 1, 0.5 (the older c = 0.75 was not).
    w = torch.tensor([0.5, 1.0, 0.5])
    assert torch.equal(_filled((1, 1, 3, 3), type="bilinear")[0, 0], w[:, None] * w[None, :])


def test_sparse_above_the_output_count_is_refused() -> None:
    with pytest.raises(ReplicateError, match="sparse 5 exceeds the 4 outputs"):
        _filled((4, 10), type="gaussian", sparse=5)


def test_unknown_filler_names_the_known_ones() -> None:
    with pytest.raises(ReplicateError, match="unknown filler type 'gausian'.*gaussian"):
        _filled((2,), type="gausian")


def test_sparse_is_refused_where_caffe_refuses_it() -> None:
    with pytest.raises(ReplicateError, match="sparse"):
        _filled((2, 2), type="xavier", sparse=1)
