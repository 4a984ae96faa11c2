"""A one-line progress report on stderr for long dataset jobs (conversion, means).

Redrawn in place on a terminal; elsewhere (logs, CI) a line every 10% so files stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO | None = None):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.monotonic()
        self._tty = self.stream.isatty()
        self._last_decile = -1
        self._last_draw = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self._tty:
            if now - self._last_draw >= 0.2 or self.done >= self.total:
                self._last_draw = now
                self.stream.write("\r" + self._line(now))
                self.stream.flush()
        else:
            decile = 10 * self.done // self.total
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self._line(now) + "\n")

    def _line(self, now: float) -> str:
        rate = self.done / max(now - self.start, 1e-9)
        return f"{self.label}: {self.done}/{self.total} ({100 * self.done // self.total}%, {rate:.0f}/s)"

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
