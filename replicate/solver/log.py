"""Training logs: Caffe's glog lines (stderr and `train.log`) and a structured `metrics.jsonl`.

The text lines are Caffe's own, prefix included, so that tools written for Caffe logs (and our
own results parser) read a run of ours exactly like one of Caffe's; the JSONL file carries the
same numbers at full precision for programs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from replicate.eta import eta_text

#: The files a run writes next to its solver.
TRAIN_LOG, METRICS_FILE = "train.log", "metrics.jsonl"


def caffe_number(value: float) -> str:
    """A float as C++ `ostream << float` prints it (6 significant digits, %g style)."""
    return f"{value:.6g}"


def output_text(name: str, value: float, loss_weight: float) -> str:
    """`name = v` plus Caffe's ` (* w = w*v loss)` for a loss output; the product in float as Caffe's."""
    text = f"{name} = {caffe_number(value)}"
    if loss_weight:
        product = np.float32(loss_weight) * np.float32(value)
        text += f" (* {caffe_number(loss_weight)} = {caffe_number(float(product))} loss)"
    return text


def cut_unfinished_line(path: Path) -> int:
    """Cut a last line that has no newline from `path`; the bytes cut (0: none, or no file).

    Every line is written with its newline in one write, so a last line without one is a write
    the stopped run never finished (a full disk or quota, a node that crashed: what is left may
    be a cut number, or NUL bytes).  Appending after it would glue the next line onto it: a
    record no reader can parse, in the middle of the file.  The record was of an iteration after
    the snapshot the run resumes from, so the resumed run writes it again."""
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return 0
    with f:
        size = end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            f.truncate(keep)
        return size - keep


class RunLog:
    """Writes Caffe-style lines to stderr and a log file, and records to metrics.jsonl."""

    def __init__(self, folder: Path | None, echo: bool = True, append: bool = False):
        self.echo: TextIO | None = sys.stderr if echo else None
        self._terminal = self.echo is not None and self.echo.isatty()  # asked once: a syscall
        self.pid = os.getpid()
        mode = "a" if append else "w"
        cut = {name: cut_unfinished_line(folder / name) for name in (TRAIN_LOG, METRICS_FILE)} if (
            folder and append) else {}
        self.text = open(folder / TRAIN_LOG, mode, encoding="utf-8") if folder else None
        self.metrics = open(folder / METRICS_FILE, mode, encoding="utf-8") if folder else None
        self._progress = ""  # the progress line to keep in view (terminal only)
        self._progress_shown = False
        self._drawn_at = -math.inf
        for name, size in cut.items():
            if size:
                self.warning(f"cut the last {size} bytes of {name}: a line the stopped run did not finish "
                             "writing (its iteration is after the snapshot, so this run writes it again)", "train.py:0")

    def info(self, message: str, source: str = "solver.py:0") -> None:
        self._line("I", message, source)

    def warning(self, message: str, source: str = "solver.py:0") -> None:
        """A glog warning line ("W..."), which Caffe's log readers take like an info line."""
        self._line("W", message, source)

    def _line(self, severity: str, message: str, source: str) -> None:
        now = datetime.now()
        line = f"{severity}{now:%m%d %H:%M:%S}.{now.microsecond:06d} {self.pid:5d} {source}] {message}"
        self._clear_progress()
        if self.echo is not None:
            print(line, file=self.echo, flush=True)
            self._draw_progress()
        if self.text is not None:
            self.text.write(line + "\n")
            self.text.flush()

    def record(self, **fields: Any) -> None:
        if self.metrics is not None:
            self.metrics.write(json.dumps(fields) + "\n")
            self.metrics.flush()

    def progress(self, iteration: int, max_iter: int, rate: float) -> None:
        """A progress line under the log lines, only when stderr is a terminal: redrawn at most
        once a second, and again after every log line so that it stays in view."""
        if not self._terminal:
            return
        self._progress = f"  iter {iteration}/{max_iter}  {rate:.2f} it/s  ETA {eta_text(max_iter - iteration, rate)} "
        now = time.monotonic()
        if now - self._drawn_at >= 1.0:
            self._drawn_at = now
            self._clear_progress()
            self._draw_progress()

    def _draw_progress(self) -> None:
        if self._progress and self.echo is not None:
            self.echo.write(self._progress)
            self.echo.flush()
            self._progress_shown = True

    def _clear_progress(self) -> None:
        if self._progress_shown and self.echo is not None:
            self.echo.write("\r\033[K")
            self._progress_shown = False

    def close(self) -> None:
        self._clear_progress()
        self._progress = ""
        for f in (self.text, self.metrics):
            if f is not None:
                f.close()
