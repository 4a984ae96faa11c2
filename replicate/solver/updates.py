"""Caffe's update rules (sgd/nesterov/adagrad/rmsprop/adadelta/adam_solver.cpp) on tensors.

Caffe's form matters: the learning rate sits *inside* the momentum history
(history = momentum * history + lr * lr_mult * (grad + decay); w -= history), unlike
torch.optim.SGD, so a schedule's lr drop takes effect gradually and the solverstate's history
has Caffe's meaning.  `ApplyUpdate` order: clip gradients, then per parameter normalize by
iter_size, regularize, compute the update value; then every weight moves by its update.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2

#: Solver types and how many history blobs each keeps per parameter (the solverstate layout:
#: AdaDelta and Adam store all first histories, then all second ones).
HISTORY_BLOBS = {"SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "AdaDelta": 2, "Adam": 2}


def _f32(x: float) -> float:
    """A solver field as the float Caffe holds it."""
    return float(np.float32(x))


class UpdateRule:
    """One of Caffe's solvers: owns the history blobs and turns gradients into weight steps."""

    def __init__(self, param: caffe_pb2.SolverParameter, shapes: Sequence[torch.Size], device: torch.device):
        kind = param.type
        if kind not in HISTORY_BLOBS:
            raise ReplicateError(f"unknown solver type '{kind}'; known: {', '.join(HISTORY_BLOBS)}")
        if param.regularization_type not in ("L1", "L2"):
            raise ReplicateError(f"unknown regularization_type '{param.regularization_type}' (L1 or L2)")
        if kind in ("AdaGrad", "RMSProp") and param.momentum != 0:
            raise ReplicateError(f"{kind} does not use momentum; set momentum to 0")
        if kind == "RMSProp" and not 0 <= param.rms_decay < 1:
            # Caffe's RMSPropSolver CHECKs 0 <= rms_decay < 1 (at 1 the history never leaves 0).
            raise ReplicateError(f"rms_decay must be within [0, 1), not {param.rms_decay:g}")
        self.kind = kind
        self.param = param
        self.momentum = _f32(param.momentum)
        self.momentum2 = _f32(param.momentum2)
        self.delta = _f32(param.delta)
        self.rms_decay = _f32(param.rms_decay)
        self.weight_decay = _f32(param.weight_decay)
        n = HISTORY_BLOBS[kind]
        self.history: list[torch.Tensor] = [
            torch.zeros(s, dtype=torch.float32, device=device) for _ in range(n) for s in shapes
        ]
        self.count = len(shapes)

    # ---------------------------------------------------------------- the whole ApplyUpdate
    def apply(
        self,
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        lr_mults: Sequence[float],
        decay_mults: Sequence[float],
        rate: float,
        iteration: int,
    ) -> tuple[float, float] | None:
        """Update `params` in place from `grads` (which this consumes) as Caffe's ApplyUpdate;
        where clip_gradients scaled the gradients down, their L2 norm and the scale (which Caffe
        logs), else None."""
        clipped = self._clip(grads)
        iter_size = self.param.iter_size
        for i, (w, g) in enumerate(zip(params, grads)):
            if iter_size != 1:
                g.mul_(_f32(1.0 / iter_size))
            self._regularize(w, g, decay_mults[i])
            local_rate = _f32(rate * _f32(lr_mults[i]))
            self._update_value(i, g, local_rate, iteration)
            w.sub_(g)
        return clipped

    def _clip(self, grads: Sequence[torch.Tensor]) -> tuple[float, float] | None:
        clip = _f32(self.param.clip_gradients)
        if clip < 0:
            return None
        sumsq = float(sum(g.double().pow(2).sum().item() for g in grads))
        norm = math.sqrt(sumsq)
        if norm <= clip:
            return None
        scale = _f32(clip / norm)
        for g in grads:
            g.mul_(scale)
        return norm, scale

    def _regularize(self, w: torch.Tensor, g: torch.Tensor, decay_mult: float) -> None:
        local_decay = _f32(self.weight_decay * _f32(decay_mult))
        if not local_decay:
            return
        if self.param.regularization_type == "L2":
            g.add_(w, alpha=local_decay)
        else:
            g.add_(torch.sign(w), alpha=local_decay)

    def _update_value(self, i: int, g: torch.Tensor, lr: float, iteration: int) -> None:
        """Turn the regularized gradient `g` into the step (in place), as ComputeUpdateValue."""
        h = self.history[i]
        if self.kind == "SGD":
            h.mul_(self.momentum).add_(g, alpha=lr)
            g.copy_(h)
        elif self.kind == "Nesterov":
            previous = h.clone()
            h.mul_(self.momentum).add_(g, alpha=lr)
            g.copy_(h.mul(1.0 + self.momentum).sub_(previous, alpha=self.momentum))
        elif self.kind == "AdaGrad":
            h.add_(g * g)
            g.div_(h.sqrt().add_(self.delta)).mul_(lr)
        elif self.kind == "RMSProp":
            h.mul_(self.rms_decay).add_(g * g, alpha=1.0 - self.rms_decay)
            g.div_(h.sqrt().add_(self.delta)).mul_(lr)
        elif self.kind == "AdaDelta":
            updates = self.history[i + self.count]
            h.mul_(self.momentum).add_(g * g, alpha=1.0 - self.momentum)
            g.mul_((updates + self.delta).div_(h + self.delta).sqrt_())
            updates.mul_(self.momentum).add_(g * g, alpha=1.0 - self.momentum)
            g.mul_(lr)
        elif self.kind == "Adam":
            v = self.history[i + self.count]
            t = iteration + 1
            correction = math.sqrt(1.0 - math.pow(self.momentum2, t)) / (1.0 - math.pow(self.momentum, t))
            h.mul_(self.momentum).add_(g, alpha=1.0 - self.momentum)
            v.mul_(self.momentum2).add_(g * g, alpha=1.0 - self.momentum2)
            g.copy_(h.div(v.sqrt().add_(self.delta)).mul_(_f32(lr * _f32(correction))))


class FusedSgd:
    """Caffe's SGD ApplyUpdate (momentum, L2 or L1 decay; iter_size 1, no clipping) as a few
    `_foreach` ops per group of blobs that share (lr_mult, decay_mult), where the loop in
    `UpdateRule.apply` launches about five kernels per blob.  The rate is a float32 device
    tensor, so a compiled step reads a changed rate without being compiled again; rate * lr_mult
    in float32 is what `UpdateRule.apply` computes (the rate is a float32 value).

    Blobs with lr_mult 0 only decay their history (Caffe's update times a zero rate); those whose
    history is zero, as it is unless a solverstate gave them one, never move and are left out.
    """

    def __init__(self, rule: UpdateRule, lr_mults: Sequence[float], decay_mults: Sequence[float]):
        if rule.kind != "SGD" or rule.param.iter_size != 1 or _f32(rule.param.clip_gradients) >= 0:
            raise ValueError("FusedSgd is SGD with iter_size 1 and no gradient clipping")
        self.rule = rule
        groups: dict[tuple[float, float], list[int]] = {}
        for i, (lr_mult, decay_mult) in enumerate(zip(lr_mults, decay_mults)):
            if lr_mult == 0 and not bool(rule.history[i].any()):
                continue
            groups.setdefault((_f32(lr_mult), _f32(decay_mult)), []).append(i)
        self.groups = list(groups.items())

    def apply(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None], rate: torch.Tensor) -> None:
        """Update `params` in place from `grads` (consumed; None where lr_mult is 0)."""
        rule = self.rule
        for (lr_mult, decay_mult), index in self.groups:
            w = [params[i] for i in index]
            h = [rule.history[i] for i in index]
            torch._foreach_mul_(h, rule.momentum)
            if lr_mult != 0:
                g = [grads[i] for i in index]
                local_decay = _f32(rule.weight_decay * decay_mult)
                if local_decay and rule.param.regularization_type == "L2":
                    torch._foreach_add_(g, w, alpha=local_decay)
                elif local_decay:
                    torch._foreach_add_(g, torch._foreach_sign(w), alpha=local_decay)
                torch._foreach_add_(h, torch._foreach_mul(g, rate * lr_mult))
            torch._foreach_sub_(w, h)
