"""The float lr policies (inv, poly, sigmoid) give the same bits on every CPU.

Caffe writes them in float with powf/expf.  numpy's float32 np.power/np.exp take a different SIMD
path per CPU: on an AMD EPYC without AVX-512 the inv rate at iteration 100000 came out one unit in
the last place away from the AVX-512 value (issue 14).  The reference here is the Caffe expression
in float32 with a correctly rounded powf/expf, computed by mpmath at 200 bits: a definition that
depends on no CPU and no libm.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable

import mpmath
import numpy as np
import pytest

from replicate.io.prototxt import parse_text
from replicate.proto import caffe_pb2
from replicate.solver.lr_policy import learning_rate

f32 = np.float32

INV = 'base_lr: 0.01 lr_policy: "inv" gamma: 0.0001 power: 0.75'
POLY = 'base_lr: 0.01 lr_policy: "poly" power: 0.9 max_iter: 450000'
SIGMOID = 'base_lr: 0.01 lr_policy: "sigmoid" gamma: -0.0001 stepsize: 225000'

# Iterations where glibc's powf/expf (not correctly rounded: 0.82 / 0.502 ULP) gives a rate one
# ULP from the correctly rounded one, so an implementation through libm's float functions (numpy's
# float32 path on a CPU without AVX-512) fails here; found by a scan of 0..450000.
GLIBC_MISROUNDS = {
    "inv": [188, 4384, 4469, 5465, 6442, 9018, 9301, 12934],
    "poly": [1086, 3344, 3793, 7297, 8887, 9593, 12914, 13173],
    "sigmoid": [193586, 211080, 215123, 217680, 219845, 221159, 227332, 230909],
}
# Every 997th iteration of a 450k run: numpy's AVX-512 float32 power/exp misround ~15-20% of these.
SAMPLE = list(range(0, 450001, 997))


def _solver(text: str) -> caffe_pb2.SolverParameter:
    return parse_text(text, caffe_pb2.SolverParameter())


def _rounded(value: mpmath.mpf) -> np.float32:
    """A 200-bit value rounded once to float32 (24-bit significand, nearest-even)."""
    with mpmath.workprec(24):
        return f32(float(+value))


def _powf(x: np.float32, y: np.float32) -> np.float32:
    with mpmath.workprec(200):
        return _rounded(mpmath.power(mpmath.mpf(float(x)), mpmath.mpf(float(y))))


def _expf(x: np.float32) -> np.float32:
    with mpmath.workprec(200):
        return _rounded(mpmath.exp(mpmath.mpf(float(x))))


# Caffe's SGDSolver::GetLearningRate expressions, float for float.
def _caffe_inv(it: int) -> np.float32:
    return f32(0.01) * _powf(f32(1) + f32(0.0001) * f32(it), -f32(0.75))


def _caffe_poly(it: int) -> np.float32:
    return f32(0.01) * _powf(f32(1) - f32(it) / f32(450000), f32(0.9))


def _caffe_sigmoid(it: int) -> np.float32:
    return f32(0.01) * (f32(1) / (f32(1) + _expf(-f32(-0.0001) * (f32(it) - f32(225000)))))


@pytest.mark.parametrize(
    "name, text, caffe",
    [("inv", INV, _caffe_inv), ("poly", POLY, _caffe_poly), ("sigmoid", SIGMOID, _caffe_sigmoid)],
)
def test_float_policies_equal_caffes_expression_with_correctly_rounded_powf_expf(
    name: str, text: str, caffe: Callable[[int], np.float32]
) -> None:
    solver = _solver(text)
    for it in sorted({*SAMPLE, *GLIBC_MISROUNDS[name], 100000}):
        assert learning_rate(solver, it, 0)[0] == float(caffe(it)), f"{name} at iteration {it}"


def test_inv_rate_at_iteration_100000_is_the_one_that_failed_on_amd() -> None:
    # float: 1 + 0.0001f * 100000 = 11, powf(11, -0.75) correctly rounded, times 0.01f.  numpy's
    # float32 power gave 0.0016556003829464316 with AVX-512 and this value without; the same
    # expression in double would round to 0.0016556002665311098.
    assert learning_rate(_solver(INV), 100000, 0)[0] == 0.001655600150115788


_CHILD = """
import hashlib
import sys
import numpy as np
from replicate.io.prototxt import parse_text
from replicate.proto import caffe_pb2
from replicate.solver.lr_policy import learning_rate
iters = [int(a) for a in sys.argv[2:]]
solver = parse_text(sys.argv[1], caffe_pb2.SolverParameter())
print(" ".join(repr(learning_rate(solver, it, 0)[0]) for it in iters))
x = np.float32(1) + np.float32(0.0001) * np.arange(450001, dtype=np.float32)
print(hashlib.sha256(np.power(x, np.float32(-0.75)).tobytes()).hexdigest())
"""

# numpy 2.x dispatch targets above the x86-64-v2 baseline; disabling them leaves numpy on the
# path a CPU without AVX-512 (and without AVX2) takes.
_NO_SIMD = {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512_SKX", "ATEN_CPU_CAPABILITY": "default"}


def test_rates_are_the_same_bits_when_numpy_takes_another_cpus_simd_path() -> None:
    iters = [str(it) for it in (*SAMPLE[:150], *GLIBC_MISROUNDS["inv"], 100000)]
    here = " ".join(repr(learning_rate(_solver(INV), int(it), 0)[0]) for it in iters)
    env = {**os.environ, **_NO_SIMD}
    out = subprocess.run([sys.executable, "-c", _CHILD, INV, *iters], env=env, capture_output=True, text=True, check=True)
    there, numpy_there = out.stdout.split("\n")[:2]
    assert there == here
    # The simulated CPU really computes numpy's float32 power differently wherever this one uses
    # AVX-512 (on a CPU without it, both paths are the same and only the line above is proven).
    if _cpu_features().get("AVX512_SKX"):
        x = f32(1) + f32(0.0001) * np.arange(450001, dtype=f32)
        assert hashlib.sha256(np.power(x, f32(-0.75)).tobytes()).hexdigest() != numpy_there


def _cpu_features() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__
    return __cpu_features__
