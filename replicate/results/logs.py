"""Caffe training logs and our metrics.jsonl, read into validation curves.

Three writers produce the curves this project compares:
- the authors' 2014 Caffe: `solver.cpp:96] Iteration 111000, Testing net` then
  `solver.cpp:123] Test score #0: 0.597` (top-1) and `Test score #1: 1.66` (mean -log p(true));
- modern Caffe and our trainer: `Iteration 1000, Testing net (#0)` then
  `Test net output #0: accuracy = 0.51` and `Test net output #1: loss = 1.2 (* 1 = 1.2 loss)`;
- our trainer's `metrics.jsonl` (`{"iter": N, "kind": "test", "net": 0, "outputs": {...}}`).

A log that cannot be read completely is a `LogError`, never a shorter curve: a curve that
silently lost its best points would move the paper's statistic.  A run resumed from a snapshot
appends to its log and repeats the iterations after the snapshot; the later record of an
iteration replaces the earlier one and everything logged after it, as the resumed run did.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replicate.errors import ReplicateError

FORMAT_2014 = "caffe-2014"
FORMAT_MODERN = "caffe"
FORMAT_METRICS = "metrics.jsonl"

# glog's prefix: severity+date (MMDD or YYYYMMDD), time, thread id, file:line]
_PREFIX = re.compile(r"^[IWEF]\d{4,8} +\d\d:\d\d:\d\d\.\d+ +\d+ +[^\s\]]+:\d+\] ?")
_TEST_2014 = re.compile(r"Iteration (\d+), Testing net")
_TEST_MODERN = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_SCORE_2014 = re.compile(r"Test score #(\d+): (\S+)")
_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = (\S+)(?: \(\* \S+ = \S+ loss\))?")
_TRAIN_LOSS = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = (\S+)")
_LR = re.compile(r"Iteration (\d+), lr = (\S+)")
_TOP5 = re.compile(r"top-?5", re.I)
_ACC = re.compile(r"acc|top-?1", re.I)


class LogError(ReplicateError):
    """A log that is corrupt or truncated: `path` and `reason` go into the report."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ValPoint:
    """One test of validation net #0: top-1 accuracy and mean loss (None: no loss output)."""

    iter: int
    top1: float
    loss: float | None


@dataclass(frozen=True)
class TrainPoint:
    iter: int
    loss: float | None = None
    lr: float | None = None


@dataclass
class Curve:
    """Everything one log says about a run's progress."""

    source: str
    format: str
    val: list[ValPoint] = field(default_factory=list)
    train: list[TrainPoint] = field(default_factory=list)
    done: bool = False
    #: How the run trained (metrics.jsonl's `config` record: precision, device, ...); the
    #: last one when a run was resumed; None for Caffe logs.
    config: dict[str, Any] | None = None


def _number(text: str, path: str, lineno: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise LogError(path, f"line {lineno}: {text!r} is not a number") from None


def _resume(points: list, iteration: int) -> None:
    """Drop what a resumed run logs again: every point at or after `iteration`."""
    while points and points[-1].iter >= iteration:
        points.pop()


def _pick_top1(names: Iterable[str]) -> str | None:
    names = list(names)
    if "accuracy" in names:
        return "accuracy"
    found = [n for n in names if _ACC.search(n) and not _TOP5.search(n)]
    return found[0] if len(found) == 1 else None


def _pick_loss(names: Iterable[str], weighted: Iterable[str] = ()) -> str | None:
    weighted = list(weighted)
    if len(weighted) == 1:
        return weighted[0]
    found = [n for n in names if "loss" in n.lower()]
    return found[0] if len(found) == 1 else None


def _val_point(iteration: int, outputs: dict[str, float], weighted: list[str],
               path: str, where: str) -> ValPoint:
    top1 = _pick_top1(outputs)
    if top1 is None:
        raise LogError(path, f"{where}: no single top-1 accuracy among the test outputs "
                             f"{sorted(outputs)}")
    value = outputs[top1]
    if not 0.0 <= value <= 1.0:
        raise LogError(path, f"{where}: top-1 accuracy {value} is outside [0, 1]")
    loss = _pick_loss(outputs, weighted)
    return ValPoint(iteration, value, outputs[loss] if loss is not None else None)


class _Test:
    """One test block being read: where it started and the scores seen so far."""

    def __init__(self, iteration: int, net: int, lineno: int, modern: bool) -> None:
        self.iter, self.net, self.lineno, self.modern = iteration, net, lineno, modern
        self.scores: dict[str, float] = {}
        self.weighted: list[str] = []


def _message(line: str) -> str:
    match = _PREFIX.match(line)
    return (line[match.end():] if match else line).strip()


def parse_lines(lines: Iterable[str], path: str) -> Curve:
    """Read a Caffe log of either format; `path` names it in errors."""
    curve = Curve(path, "")
    test: _Test | None = None
    formats: set[str] = set()

    def close() -> None:
        nonlocal test
        if test is None:
            return
        block, test = test, None
        if block.net != 0:
            return
        where = f"test at iteration {block.iter} (line {block.lineno})"
        if not block.scores:
            raise LogError(path, f"{where} has no scores")
        if block.modern:
            point = _val_point(block.iter, block.scores, block.weighted, path, where)
        else:
            if set(block.scores) != {"0", "1"}:
                raise LogError(path, f"{where}: expected Test score #0 and #1, found "
                                     f"{', '.join('#' + k for k in sorted(block.scores))}")
            point = _val_point(block.iter, {"accuracy": block.scores["0"],
                                            "loss": block.scores["1"]}, ["loss"], path, where)
        _resume(curve.val, point.iter)
        curve.val.append(point)

    for lineno, raw in enumerate(lines, 1):
        if "\x00" in raw or "\ufffd" in raw:
            raise LogError(path, f"line {lineno}: binary data, not a text log")
        msg = _message(raw)
        if not msg:
            continue
        if m := _SCORE_2014.fullmatch(msg):
            if test is None or test.modern:
                raise LogError(path, f"line {lineno}: a test score outside a 2014-style test")
            if m[1] in test.scores:
                raise LogError(path, f"line {lineno}: Test score #{m[1]} twice in one test")
            test.scores[m[1]] = _number(m[2], path, lineno)
            continue
        if m := _OUTPUT.fullmatch(msg):
            if test is None or not test.modern:
                raise LogError(path, f"line {lineno}: a test net output outside a test")
            name = m[2]
            if name in test.scores:
                raise LogError(path, f"line {lineno}: test output {name!r} twice in one test")
            test.scores[name] = _number(m[3], path, lineno)
            if msg.endswith(" loss)"):
                test.weighted.append(name)
            continue
        if m := _TEST_MODERN.fullmatch(msg):
            close()
            test = _Test(int(m[1]), int(m[2]), lineno, modern=True)
            formats.add(FORMAT_MODERN)
            continue
        if m := _TEST_2014.fullmatch(msg):
            close()
            test = _Test(int(m[1]), 0, lineno, modern=False)
            formats.add(FORMAT_2014)
            continue
        if m := _TRAIN_LOSS.fullmatch(msg):
            close()
            _add_train(curve, int(m[1]), loss=_number(m[2], path, lineno))
            continue
        if m := _LR.fullmatch(msg):
            close()
            _add_train(curve, int(m[1]), lr=_number(m[2], path, lineno))
            continue
        if msg.startswith("Optimization Done"):
            close()
            curve.done = True
    if test is not None:
        last = test
        try:
            close()
        except LogError as err:
            raise LogError(path, f"truncated: the log ends inside the test at iteration "
                                 f"{last.iter} (line {last.lineno}): {err.reason}") from None
    if len(formats) > 1:
        raise LogError(path, "mixes 2014 (`Test score #k`) and modern (`Test net output`) tests")
    curve.format = formats.pop() if formats else FORMAT_MODERN
    if not curve.val:
        raise LogError(path, "no validation points (no `Testing net` with scores)")
    return curve


def _add_train(curve: Curve, iteration: int, loss: float | None = None,
               lr: float | None = None) -> None:
    """Merge a training line into the point of its iteration (Caffe logs loss and lr apart)."""
    if curve.train and curve.train[-1].iter == iteration:
        last = curve.train.pop()
        loss = last.loss if loss is None else loss
        lr = last.lr if lr is None else lr
    else:
        _resume(curve.train, iteration)
    curve.train.append(TrainPoint(iteration, loss, lr))


def _text_lines(path: Path) -> Iterator[str]:
    """Lines of a plain or gzip log (gzip recognised by its magic bytes, whatever the name)."""
    lineno = 0
    try:
        with open(path, "rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as handle:
            for lineno, raw in enumerate(handle, 1):
                yield raw.decode("utf-8", errors="replace")
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise LogError(str(path), f"gzip data broken after line {lineno}: {err}") from None
    except OSError as err:
        raise LogError(str(path), f"cannot read: {err.strerror or err}") from None


def read_log(path: str | Path) -> Curve:
    """Parse one Caffe log file, plain or gzip."""
    path = Path(path)
    return parse_lines(_text_lines(path), str(path))


def read_metrics(path: str | Path) -> Curve:
    """Parse our trainer's metrics.jsonl (test net #0 only)."""
    path = Path(path)
    curve = Curve(str(path), FORMAT_METRICS)
    for lineno, raw in enumerate(_text_lines(path), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            kind = record["kind"]
            if kind == "config":
                curve.config = record
                continue
            iteration = int(record["iter"])
        except (ValueError, KeyError, TypeError) as err:
            raise LogError(str(path), f"line {lineno}: not a metrics record ({err})") from None
        if kind == "test" and record.get("net", 0) == 0:
            outputs = record.get("outputs")
            if not isinstance(outputs, dict) or not all(
                    isinstance(v, (int, float)) for v in outputs.values()):
                raise LogError(str(path), f"line {lineno}: test outputs are not numbers")
            point = _val_point(iteration, {k: float(v) for k, v in outputs.items()}, [],
                               str(path), f"line {lineno}")
            _resume(curve.val, iteration)
            curve.val.append(point)
        elif kind == "train":
            _resume(curve.train, iteration)
            curve.train.append(TrainPoint(iteration, _opt(record.get("loss")),
                                          _opt(record.get("lr"))))
        elif kind == "done":
            curve.done = True
    if not curve.val:
        raise LogError(str(path), "no validation points (no test records of net 0)")
    return curve


def _opt(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _close(a: float | None, b: float | None) -> bool:
    """Equal within what glog's 6 significant digits keep."""
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def check_agree(log: Curve, metrics: Curve) -> None:
    """train.log and metrics.jsonl of one run must tell the same validation story."""
    a, b = log.val, metrics.val
    if [p.iter for p in a] != [p.iter for p in b]:
        only_log = sorted({p.iter for p in a} - {p.iter for p in b})[:3]
        only_metrics = sorted({p.iter for p in b} - {p.iter for p in a})[:3]
        raise LogError(metrics.source, f"tests at other iterations than {log.source} "
                                       f"(only in the log: {only_log}, only here: {only_metrics})")
    for p, q in zip(a, b):
        if not (_close(p.top1, q.top1) and _close(p.loss, q.loss)):
            raise LogError(metrics.source, f"iteration {p.iter}: top-1 {q.top1}, loss {q.loss} "
                                           f"but {log.source} says {p.top1}, {p.loss}")


def merge(curves: list[Curve], source: str) -> Curve:
    """One run logged in several files (each restart a new log): order them by first test
    and apply the resume rule across them."""
    curves = sorted(curves, key=lambda c: c.val[0].iter)
    merged = Curve(source, curves[0].format)
    for c in curves:
        if c.format != merged.format:
            raise LogError(source, f"logs of one run in two formats ({merged.format}, {c.format})")
        for p in c.val:
            _resume(merged.val, p.iter)
            merged.val.append(p)
        for t in c.train:
            _resume(merged.train, t.iter)
            merged.train.append(t)
    merged.done = curves[-1].done
    return merged
