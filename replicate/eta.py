"""Time left, as a person reads it: HH:MM:SS, with hours past a day (450,000 iterations can take
days), for `train`'s progress line and `grid run`'s reports."""

from __future__ import annotations

import math


def eta_text(remaining: float, rate: float) -> str:
    """`remaining` units at `rate` units per second; "?" before any rate is known."""
    if rate <= 0 or not math.isfinite(rate) or remaining < 0:
        return "?"
    hours, rest = divmod(round(remaining / rate), 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
