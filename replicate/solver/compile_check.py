"""What the first compiled iteration of a run is checked with: copies of the solver's state, the
random streams, and the verdict on the compiled outcome.

`--compile` runs code that torch.compile generates, and that code has been wrong without a word:
torch 2.11 traced SoftmaxWithLoss without its normalizer and LRN down the wrong branch
(replicate/proto/__init__.py).  So the solver runs its first compiled iteration twice, compiled
and eager, from the same weights, history, batch, dropout masks and random state, and compares
the loss, the weights and the history after them (`check_iteration`); the first batch of each
test net is run both ways too (`check_test_batch`).  The history holds the step
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

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import torch

from replicate.solver.distributed import Group
from replicate.solver.log import RunLog

#: What a test net's program gives for a batch: its loss (None without one) and its outputs.
TestResult = tuple[torch.Tensor | None, dict[str, torch.Tensor]]
#: What the caller's iteration leaves beside its loss (the solver: its rate and last forward).
Kept = TypeVar("Kept")

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


def clock(device: torch.device) -> float:
    """time.perf_counter() once `device` has done what it was given (for the checks' cost)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@contextlib.contextmanager
def caffe_arithmetic(precision: str, use_precision: Callable[[str], None]) -> Iterator[None]:
    """Run the enclosed code in fp32 (no autocast, TF32 off), whatever the run's `precision`:
    `use_precision` sets the arithmetic the caller's code runs at (the solver's: torch's matmul
    settings and its autocast), and puts `precision` back on the way out."""
    use_precision("fp32")
    try:
        yield
    finally:
        use_precision(precision)


def agreed(verdict: Verdict, group: Group, device: torch.device) -> Verdict:
    """`verdict`, failed in every process where it failed in one (all go on the same way)."""
    failed = torch.tensor([float(not verdict.passed)], device=device)
    group.mean_([failed])
    return verdict._replace(passed=not bool(failed.item()))


class IterationCheck(NamedTuple):
    """The checked iteration's verdict, the loss and what the caller's iteration left beside it
    (`kept`) of the outcome the run goes on from, and what the check cost in seconds."""

    verdict: Verdict
    loss: torch.Tensor
    kept: Any
    seconds: float


def check_iteration(
    run: Callable[[bool], tuple[torch.Tensor, Kept]], state: Sequence[torch.Tensor], precision: str,
    device: torch.device, group: Group, use_precision: Callable[[str], None],
) -> IterationCheck:
    """The first compiled iteration, checked: `run(False)` runs it compiled, then `run(True)`
    eager (and in tf32 or bf16 also eager in fp32) from copies of the same `state` (weights and
    history, which the runs update in place) and random state; `run` itself feeds each the same
    batches (so the same dropout masks) and puts back anything else an iteration moves (the lr
    step).  If the check passes the run goes on from the compiled outcome, exactly as it would
    have without the check; if not, from the eager one at the run's precision: its weights,
    history and random state are what this leaves in place.  The caller says so and, when it
    failed, runs eager from then on."""
    began = clock(device)
    start, randoms = copies(state), random_state(device)
    spent = clock(device) - began
    loss, compiled_kept = run(False)
    began = clock(device)
    compiled = Outcome([loss.detach().clone()], copies(state))
    compiled_randoms = random_state(device)

    def eager_from_start(keep: bool) -> tuple[Outcome, Kept]:
        """The eager iteration from the start's copies; its blobs are `state` itself unless `keep`."""
        restore(state, start)
        set_random_state(randoms, device)
        eager_loss, kept = run(True)
        return Outcome([eager_loss], copies(state) if keep else list(state)), kept

    fp32, reference = None, precision != "fp32"
    eager, eager_kept = eager_from_start(keep=reference)
    eager_randoms = random_state(device)
    if reference:
        with caffe_arithmetic(precision, use_precision):
            fp32, _ = eager_from_start(keep=False)
    found = agreed(verdict(precision, compiled, eager, fp32), group, device)
    chosen = compiled if found.passed else eager
    restore(state, chosen.blobs)
    set_random_state(compiled_randoms if found.passed else eager_randoms, device)
    kept = compiled_kept if found.passed else eager_kept
    return IterationCheck(found, chosen.values[0], kept, spent + clock(device) - began)


def check_test_batch(
    program: Callable[[dict[str, torch.Tensor]], TestResult], feed: dict[str, torch.Tensor], compiled: TestResult,
    precision: str, device: torch.device, group: Group, use_precision: Callable[[str], None],
) -> tuple[TestResult, Verdict, float]:
    """The first compiled batch of a test net, checked: its eager `program` on the same batch
    (and in tf32 or bf16 in fp32 too), compared with what the compiled one gave.  Returns the
    result the run goes on with (the eager one where they differ), the verdict and the seconds
    the check took."""
    began = clock(device)
    names = list(compiled[1])

    def outcome(result: TestResult) -> Outcome:
        values = [result[1][n] for n in names] + ([] if result[0] is None else [result[0]])
        return Outcome(values, [])

    eager = program(feed)
    fp32 = None
    if precision != "fp32":
        with caffe_arithmetic(precision, use_precision), torch.autocast(device.type, enabled=False):
            fp32 = outcome(program(feed))
    found = agreed(verdict(precision, outcome(compiled), outcome(eager), fp32), group, device)
    return (compiled if found.passed else eager), found, clock(device) - began


def report(log: RunLog, what: str, found: Verdict, iteration: int, precision: str, backend: str | None,
           seconds: float) -> dict[str, Any]:
    """Record a check in metrics.jsonl and the log (a warning when it failed: the run then goes
    on eager); returns its metrics record."""
    record = {"kind": "compile_check", "iter": iteration, "checked": what, **found.record(),
              "precision": precision, "backend": str(backend), "torch": torch.__version__, "seconds": seconds}
    log.record(**record)
    if found.passed:
        log.info(f"Compiled {what} checked against eager at iteration {iteration}: {found.text(precision)}")
    else:
        log.warning(
            f"--compile ({backend}) is wrong on torch {torch.__version__}: its {what} differs from the eager "
            f"one at {precision}: {found.text(precision)}; this run goes on from the eager result and runs eager"
        )
    return record
