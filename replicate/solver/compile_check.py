"""What the first compiled iteration of a run is checked with: copies of the solver's state, the
random streams, and the verdict on the compiled outcome.

`--compile` runs code that torch.compile generates, and that code has been wrong without a word:
torch 2.11 traced SoftmaxWithLoss without its normalizer and LRN down the wrong branch
(replicate/proto/__init__.py).  So the solver runs its first compiled iteration twice, compiled
and eager, from the same weights, history, batch, dropout masks and random state, and compares
the loss, the weights and the history after them (`Solver._checked_iteration`); the first batch
of each test net is run both ways too (`Solver._checked_test_batch`).  The history holds the step
itself (SGD: lr * (gradient + decay) plus momentum times the old history), so a wrong gradient
shows there even when the step is small next to the weights.

Distances are the e2e replay's (benchmarks/e2e_replay.py): a blob's largest deviation relative to
its largest value, a value's (loss, net output) relative to 0.1 + its size.  In fp32 the compiled
outcome must be within `TOLERANCE` (1e-5, the e2e criterion) of the eager one.  tf32 and bf16
round products or activations coarsely, and compiled code rounds at other places than eager code:
on CaffeNet in bf16 the two first-iteration conv1 steps differ by 26% (CPU, inductor), while
neither is wrong.  There the outcome that matters is Caffe's arithmetic, so the iteration is also
run eager in fp32, and the compiled outcome's largest distance from it (over every blob and
value) must be at most `SLACK` times the eager outcome's at the same precision, plus one rounding
of that precision (`ROUNDING`).  On that CaffeNet iteration both were 0.31 from fp32 (largest
blob: a history), so an error passes unseen there only where it is no larger than bf16's own;
torch 2.11's wrong graphs measured 7 (a loss 8 times too large).  The largest distance rather
than a ratio per blob: a blob that eager happens to round close to fp32 would otherwise fail a
compiled run for its noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

#: fp32: the largest relative distance between the compiled and the eager outcome that passes.
TOLERANCE = 1e-5
#: tf32, bf16: how many times the eager outcome's largest distance from fp32 the compiled one's may be ...
SLACK = 2.0
#: ... plus one rounding of the precision (its unit roundoff: 10 and 7 mantissa bits).
ROUNDING = {"tf32": 2.0**-11, "bf16": 2.0**-8}


class Outcome(NamedTuple):
    """What one run of an iteration or test batch left: values (losses, net outputs: what a log
    prints) and blobs (weights and history)."""

    values: list[torch.Tensor]
    blobs: list[torch.Tensor]


class Verdict(NamedTuple):
    """`difference` against `tolerance`: in fp32 the compiled outcome's largest distance from the
    eager one; in tf32 and bf16 the ratio of its largest distance from fp32 to what `SLACK` and
    `ROUNDING` allow (1 passes), with both outcomes' largest distances from fp32 beside it."""

    passed: bool
    difference: float
    tolerance: float
    from_fp32: tuple[float, float] | None = None

    def record(self) -> dict:
        extra = {} if self.from_fp32 is None else {"compiled_from_fp32": self.from_fp32[0],
                                                   "eager_from_fp32": self.from_fp32[1]}
        return {"passed": self.passed, "difference": self.difference, "tolerance": self.tolerance, **extra}

    def text(self, precision: str) -> str:
        if self.from_fp32 is None:
            return f"relative difference {self.difference:.3g} (tolerance {self.tolerance:g})"
        compiled, eager = self.from_fp32
        return (f"{compiled:.3g} from fp32 where eager {precision} is {eager:.3g} (ratio {self.difference:.3g} to "
                f"{SLACK:g}x eager's + {ROUNDING[precision]:.2g}; at most 1 passes)")


def verdict(precision: str, compiled: Outcome, eager: Outcome, fp32: Outcome | None = None) -> Verdict:
    """The check's verdict; `fp32` (the eager outcome at fp32) is needed for tf32 and bf16.  One
    read from the device."""
    if precision == "fp32":
        found = _largest(distances(compiled, eager))
        return Verdict(found <= TOLERANCE, found, TOLERANCE)
    ours, theirs = _largest(distances(compiled, fp32)), _largest(distances(eager, fp32))
    ratio = ours / (SLACK * theirs + ROUNDING[precision])
    return Verdict(ratio <= 1.0, ratio if ratio == ratio else math.inf, 1.0, (ours, theirs))


def distances(a: Outcome, b: Outcome) -> torch.Tensor:
    """Each value's max|a - b| / (0.1 + max|b|) and each blob's max|a - b| / max|b| (max|a - b|
    itself for a blob that is zero in `b`), as one float32 tensor on the device."""
    terms = []
    for x, y in zip(a.values, b.values):
        x, y = x.float(), y.float()
        terms.append(((x - y).abs().max() / (0.1 + y.abs().max())).reshape(1))
    for x, y in zip(a.blobs, b.blobs):
        x, y = x.float(), y.float()
        scale, deviation = y.abs().max(), (x - y).abs().max()
        terms.append(torch.where(scale > 0, deviation / scale, deviation).reshape(1))
    return torch.cat([t.to(terms[0].device) for t in terms])


def _largest(found: torch.Tensor) -> float:
    """The largest entry; infinite where one is not a number (an outcome that is not finite)."""
    return float(torch.where(found.isnan(), torch.inf, found).max())


def copies(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of `tensors` on their own devices."""
    return [t.detach().clone() for t in tensors]


def restore(tensors: Sequence[torch.Tensor], saved: Sequence[torch.Tensor]) -> None:
    """Write `saved` back into `tensors`, in place (their storage is what the compiled code reads)."""
    with torch.no_grad():
        for t, s in zip(tensors, saved):
            t.copy_(s)


def random_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """torch's generators that dropout draws from: the CPU one and `device`'s when it is a GPU."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_random_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)
