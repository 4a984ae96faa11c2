"""What the first compiled iteration of a run is checked with: copies of the solver's state, the
random streams, and the difference between the compiled and the eager outcome.

`--compile` runs code that torch.compile generates, and that code has been wrong without a word:
torch 2.11 traced SoftmaxWithLoss without its normalizer and LRN down the wrong branch
(replicate/proto/__init__.py).  So the solver runs its first compiled iteration twice, compiled
and eager, from the same weights, history, batch, dropout masks and random state, and compares
the loss, the weights and the history after them (`Solver._checked_iteration`); the first batch
of each test net is run both ways too (`Solver._checked_test_batch`).  The history
holds the step itself (SGD: lr * (gradient + decay) plus momentum times the old history), so a
wrong gradient shows there even when the step is small next to the weights.

The criterion is the e2e replay's (benchmarks/e2e_replay.py), which is what fp32 is held to
against Caffe: each blob's largest deviation relative to its largest value, and the loss's
deviation relative to 0.1 + |loss|.  tf32 and bf16 round every product or every activation more
coarsely, and compiled code rounds them at other places than eager code; their criteria
(`TOLERANCES`) sit above what compiled and eager differ by there and far below the errors a wrong
graph makes (a loss 8 times too large, a layer on the wrong branch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: The largest relative difference between the compiled and the eager iteration that passes,
#: by precision (see the module docstring and docs/fidelity.md).
TOLERANCES = {"fp32": 1e-5, "tf32": 1e-2, "bf16": 5e-2}


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


def difference(
    compiled_values: Sequence[torch.Tensor], eager_values: Sequence[torch.Tensor],
    compiled_blobs: Sequence[torch.Tensor] = (), eager_blobs: Sequence[torch.Tensor] = (),
) -> float:
    """The largest relative difference: for values (losses, net outputs: what a log prints)
    max|c - e| / (0.1 + max|e|), for blobs (weights, history) max|c - e| / max|e| (max|c - e|
    itself for a blob that is zero in the eager outcome); infinite where either outcome is not
    finite.  One read from the device."""
    terms = []
    for c, e in zip(compiled_values, eager_values):
        terms.append(((c.float() - e.float()).abs().max() / (0.1 + e.float().abs().max())).reshape(1))
    for c, e in zip(compiled_blobs, eager_blobs):
        scale, deviation = e.float().abs().max(), (c.float() - e.float()).abs().max()
        terms.append(torch.where(scale > 0, deviation / scale, deviation).reshape(1))
    found = torch.cat([t.to(terms[0].device) for t in terms])
    return float(torch.where(found.isnan(), torch.inf, found).max())
