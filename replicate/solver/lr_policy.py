"""Caffe's learning-rate policies (SGDSolver::GetLearningRate) as one pure function.

Caffe's expression types decide the value: `pow(float, int)` (step, exp, multistep) is computed
in double, while inv, poly and sigmoid are written in `Dtype` (float) arithmetic with the float
overloads of pow/exp.  `learning_rate` evaluates each policy in the same types and returns the
float32 Caffe stores, so the rate that enters every update is Caffe's to the last bit.

The float `powf`/`expf` are taken correctly rounded (`_powf`, `_expf`): the float64 libm result
rounded once to float32.  numpy's float32 `np.power`/`np.exp` would not do: they take a different
SIMD path per CPU (AVX-512 or not) and those paths differ in the last bit, so the same solver gave
another rate on another machine.  glibc's own powf/expf (what a Linux Caffe calls) are within
0.82 / 0.502 ULP, not correctly rounded; they agree with the rounded value at all but a few
iterations in a thousand (tests/test_solver_lr_bits.py counts them).
"""

from __future__ import annotations

import math

import numpy as np

from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_policy(param: caffe_pb2.SolverParameter) -> None:
    """Refuse a policy Caffe would refuse, before any training starts."""
    policy = param.lr_policy
    if policy not in POLICIES:
        raise ReplicateError(f"unknown lr_policy '{policy}'; known: {', '.join(POLICIES)}")
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise ReplicateError(f"lr_policy '{policy}' needs a positive stepsize")
    if policy == "poly" and param.max_iter <= 0:
        raise ReplicateError("lr_policy 'poly' needs a positive max_iter")
    if policy in ("step", "exp", "inv", "multistep") and param.gamma < 0:
        # Caffe's GetLearningRate CHECKs it: a negative gamma would flip the rate's sign (or, for
        # inv, raise a negative base to a power).  BVLC master CHECKs it for sigmoid too, but
        # there a negative gamma is the decaying curve, and the Caffe of the golden case
        # solver_sgd_sigmoid computed it: kept.
        raise ReplicateError(f"lr_policy '{policy}' needs a gamma of 0 or more, not {param.gamma:g}")


def _powf(x: np.float32, y: np.float32) -> np.float32:
    """C's powf(x, y) correctly rounded, the same on every CPU: libm's float64 pow rounded once.

    A float64 result carries 29 bits beyond float32's, so rounding it once gives the correctly
    rounded float except within 2**-29 ULP of a tie.  Python's math.pow raises where C returns
    an IEEE special value; those are mapped back to what powf returns.
    """
    base, exponent = float(x), float(y)
    odd_integer = exponent.is_integer() and exponent % 2 == 1
    try:
        value = math.pow(base, exponent)
    except OverflowError:
        value = math.copysign(math.inf, base) if odd_integer else math.inf
    except ValueError:  # a pole at zero, or a negative base with a non-integer exponent
        if base == 0:
            value = math.copysign(math.inf, base) if odd_integer else math.inf
        else:
            value = math.nan
    with np.errstate(over="ignore"):
        return np.float32(value)


def _expf(x: np.float32) -> np.float32:
    """C's expf(x) correctly rounded, the same on every CPU (see `_powf`)."""
    try:
        value = math.exp(float(x))
    except OverflowError:
        value = math.inf
    with np.errstate(over="ignore"):
        return np.float32(value)


def learning_rate(param: caffe_pb2.SolverParameter, iteration: int, current_step: int) -> tuple[float, int]:
    """The rate at `iteration` and the policy's step counter after it (used by step/multistep).

    `current_step` is what Caffe keeps in its solverstate: multistep advances it by at most one
    per call, exactly as Caffe's loop does.
    """
    policy = param.lr_policy
    f32 = np.float32
    base, gamma, power = f32(param.base_lr), f32(param.gamma), f32(param.power)
    if policy == "fixed":
        rate = base
    elif policy == "step":
        current_step = iteration // param.stepsize
        rate = float(base) * math.pow(float(gamma), current_step)
    elif policy == "exp":
        rate = float(base) * math.pow(float(gamma), iteration)
    elif policy == "inv":
        with np.errstate(over="ignore", invalid="ignore"):
            rate = base * _powf(f32(1) + gamma * f32(iteration), -power)
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
        rate = float(base) * math.pow(float(gamma), current_step)
    elif policy == "poly":
        with np.errstate(over="ignore", invalid="ignore"):
            rate = base * _powf(f32(1) - f32(iteration) / f32(param.max_iter), power)
    elif policy == "sigmoid":
        with np.errstate(over="ignore", invalid="ignore"):
            rate = base * (f32(1) / (f32(1) + _expf(-gamma * (f32(iteration) - f32(param.stepsize)))))
    else:
        check_policy(param)
        raise AssertionError(policy)
    return float(f32(rate)), current_step
