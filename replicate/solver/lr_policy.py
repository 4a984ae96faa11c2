"""Caffe's learning-rate policies (SGDSolver::GetLearningRate) as one pure function.

Caffe computes the rate in double from float fields and stores it as a float; `learning_rate`
returns that float32 value, so the rate that enters every update is bit-identical to Caffe's.
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


def learning_rate(param: caffe_pb2.SolverParameter, iteration: int, current_step: int) -> tuple[float, int]:
    """The rate at `iteration` and the policy's step counter after it (used by step/multistep).

    `current_step` is what Caffe keeps in its solverstate: multistep advances it by at most one
    per call, exactly as Caffe's loop does.
    """
    policy = param.lr_policy
    base = float(np.float32(param.base_lr))
    gamma = float(np.float32(param.gamma))
    power = float(np.float32(param.power))
    if policy == "fixed":
        rate = base
    elif policy == "step":
        current_step = iteration // param.stepsize
        rate = base * math.pow(gamma, current_step)
    elif policy == "exp":
        rate = base * math.pow(gamma, iteration)
    elif policy == "inv":
        rate = base * math.pow(1.0 + gamma * iteration, -power)
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
        rate = base * math.pow(gamma, current_step)
    elif policy == "poly":
        rate = base * math.pow(1.0 - iteration / float(param.max_iter), power)
    elif policy == "sigmoid":
        rate = base * (1.0 / (1.0 + math.exp(-gamma * (iteration - param.stepsize))))
    else:
        check_policy(param)
        raise AssertionError(policy)
    return float(np.float32(rate)), current_step
