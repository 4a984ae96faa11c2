"""The training loss as the solver keeps it between the iterations that read it.

Reading a loss on a GPU waits for the device, and a step that waits cannot overlap the next
one's launches.  So the per-iteration loss stays on the device: Caffe's smoothed loss
(`UpdateSmoothedLoss`, the mean of the last average_loss losses), the first iteration whose loss
was not finite, and the losses not yet written to metrics.jsonl.  The solver reads them only on
iterations that display, test or snapshot, or at the end (`read`), one copy for all of them.

The arithmetic is Caffe's float: every operation is one float32 operation on the device, with
divisors held as device tensors (a float32 division by a host scalar may become a
multiplication by its reciprocal), so the smoothed loss has the bits Caffe's has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Losses kept for metrics.jsonl before they are read anyway (display 0: no other sync point).
MAX_PENDING = 1000


@dataclass(frozen=True)
class Reading:
    """What the loss monitor held at a sync point."""

    smoothed: float
    #: (iteration, rate, its loss, the smoothed loss after it) for every iteration queued since.
    records: list[tuple[int, float, float, float]]
    #: The first iteration whose loss was NaN or infinite, and that loss; None if none was.
    diverged: tuple[int, float] | None


class LossMonitor:
    """Caffe's smoothed loss, a non-finite watch and the unwritten losses, on `device`."""

    def __init__(self, average: int, device: torch.device):
        self.average = average
        self.window = torch.zeros(self.average, dtype=torch.float32, device=device)
        #: 1, 2, ..., average as float32: the divisors.
        self.counts = torch.arange(1, self.average + 1, dtype=torch.float32, device=device)
        self.filled = 0
        self.smoothed = torch.zeros((), dtype=torch.float32, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float32, device=device)
        self.pending: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []

    def add(self, loss: torch.Tensor, iteration: int, position: int, rate: float | None = None,
            watch: bool = True) -> None:
        """Caffe's UpdateSmoothedLoss with `loss` (float32, on the device) at `position` =
        iteration - the Step call's first iteration; queued for metrics with its learning rate
        when `rate` is given; remembered if it is the first non-finite one when `watch`."""
        if self.filled < self.average:
            n = self.filled
            self.smoothed = (self.smoothed * self.counts[n - 1] + loss) / self.counts[n] if n else loss / self.counts[0]
            self.window[n] = loss
            self.filled += 1
        else:
            i = position % self.average
            self.smoothed = self.smoothed + (loss - self.window[i]) / self.counts[-1]
            self.window[i] = loss
        if watch:
            fresh = ~torch.isfinite(loss) & (self.first_bad < 0)
            self.first_bad = torch.where(fresh, iteration, self.first_bad)
            self.bad_loss = torch.where(fresh, loss, self.bad_loss)
        if rate is not None:
            self.pending.append((iteration, rate, loss, self.smoothed))

    def restart(self) -> None:
        """A new Step call starts a new window (Caffe clears `losses_` and the smoothed loss)."""
        self.window.zero_()
        self.smoothed = torch.zeros_like(self.smoothed)
        self.filled = 0

    @property
    def due(self) -> bool:
        """Whether enough losses wait that they should be read now."""
        return len(self.pending) >= MAX_PENDING

    def read(self) -> Reading:
        """Everything at once, in one copy from the device (a sync)."""
        pending, self.pending = self.pending, []
        values = torch.stack(
            [self.smoothed, self.first_bad.to(torch.float32), self.bad_loss]
            + [v for _, _, loss, smoothed in pending for v in (loss, smoothed)]
        ).tolist()
        smoothed, first_bad, bad_loss = values[:3]
        records = [(it, rate, values[3 + 2 * k], values[4 + 2 * k]) for k, (it, rate, _, _) in enumerate(pending)]
        diverged = (int(first_bad), bad_loss) if first_bad >= 0 else None
        return Reading(smoothed, records, diverged)
