"""The progress report of long data jobs: rate and ETA, redrawn on a terminal, a line at least
every 30 s in a log."""

from __future__ import annotations

import io

from replicate.data import progress as progress_module
from replicate.data.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _clock(monkeypatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    return now


def test_a_log_gets_a_line_at_the_start_every_30_s_and_at_the_end_with_rate_and_eta(monkeypatch) -> None:
    now, log = _clock(monkeypatch), io.StringIO()
    progress = Progress(1_000_000, "decoding", log)
    for _ in range(9):  # 100,000 images in 90 s: a line at 30, 60 and 90 s
        now[0] += 10
        progress.update(100_000 // 9 if _ < 8 else 100_000 - 8 * (100_000 // 9))
    now[0] += 5
    progress.update(0)  # 95 s: no line yet
    now[0] += 805
    progress.update(900_000)
    progress.close()
    assert log.getvalue().splitlines() == [
        "decoding: 0/1,000,000 (0%, 0/s, ETA ?)",
        "decoding: 33,333/1,000,000 (3%, 1,111/s, ETA 00:14:30)",
        "decoding: 66,666/1,000,000 (6%, 1,111/s, ETA 00:14:00)",
        "decoding: 100,000/1,000,000 (10%, 1,111/s, ETA 00:13:30)",
        "decoding: 1,000,000/1,000,000 (100%, 1,111/s, ETA 00:00:00)",
    ]


def test_a_terminal_line_is_redrawn_in_place_with_the_eta(monkeypatch) -> None:
    now, tty = _clock(monkeypatch), _Terminal()
    progress = Progress(300, "means of 2 training sets", tty)
    now[0] += 1
    progress.update(100)
    now[0] += 0.1
    progress.update(50)  # within 0.2 s of the last draw: not drawn
    now[0] += 1
    progress.update(150)
    progress.close()
    assert tty.getvalue() == ("\rmeans of 2 training sets: 100/300 (33%, 100/s, ETA 00:00:02)"
                              "\rmeans of 2 training sets: 300/300 (100%, 143/s, ETA 00:00:00)\n")
