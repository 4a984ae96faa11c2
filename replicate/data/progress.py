"""A progress report on stderr for long dataset jobs (decoding, means, exports, conversions).

Every report says how far, how fast and how long is left (count, percentage, rate, ETA), so that
a person can plan around a job of hours.  On a terminal one line is redrawn in place; elsewhere
(a log file, a SLURM output) a line is written at the start, at least every `LOG_EVERY` seconds,
and at the end, so a log never stays silent long enough to look hung.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from replicate.eta import eta_text

#: Seconds between two lines when the output is not a terminal.
LOG_EVERY = 30.0
#: Seconds between two redraws on a terminal.
DRAW_EVERY = 0.2


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO | None = None):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.monotonic()
        self._tty = self.stream.isatty()
        self._last_line = self.start
        if not self._tty:
            self._write(self.start)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        every = DRAW_EVERY if self._tty else LOG_EVERY
        if now - self._last_line >= every or self.done >= self.total:
            self._last_line = now
            self._write(now)

    def _write(self, now: float) -> None:
        if self._tty:
            self.stream.write("\r" + self._line(now))
        else:
            self.stream.write(self._line(now) + "\n")
        self.stream.flush()

    def _line(self, now: float) -> str:
        rate = self.done / max(now - self.start, 1e-9)
        eta = eta_text(self.total - self.done, rate) if self.done else "?"
        return (f"{self.label}: {self.done:,}/{self.total:,} ({100 * self.done // self.total}%, "
                f"{rate:,.0f}/s, ETA {eta})")

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
