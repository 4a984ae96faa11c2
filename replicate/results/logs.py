"""Caffe training logs and our metrics.jsonl, read into validation curves.

Three writers produce the curves this project compares:
- the authors' 2014 Caffe: `solver.cpp:96] Iteration 111000, Testing net` then
  `solver.cpp:123] Test score #0: 0.597` (top-1) and `Test score #1: 1.66` (mean -log p(true));
- modern Caffe and our trainer: `Iteration 1000, Testing net (#0)` then
  `Test net output #0: accuracy = 0.51` and `Test net output #1: loss = 1.2 (* 1 = 1.2 loss)`;
- our trainer's `metrics.jsonl` (`{"iter": N, "kind": "test", "net": 0, "outputs": {...}}`).

A run killed and resumed from a snapshot is logged in segments, one per process: appended to
one file (our train.log), or one file per cluster job (the authors' release:
`<yymmdd_hhmmss>_<job>.o<jobid>.gz`, 1-8 per net).  A segment ends where the next one starts
(a `Solving <net>` line, or an iteration lower than the last one) or with its file.  Segments
are put in the order they ran, by the glog time of their first line, and a later segment's
record of an iteration replaces the earlier one; points that no later segment repeats are kept.
That is the rule of the authors' own plotting notebook (the newest record of each iteration
wins), and the only one found that gives back all 148 of their curves
(results/original_curves.csv.gz) from the release.  Neither file order nor the iteration a
segment starts from will do: netbase/catlog.oMANUAL.gz holds its resumed run before the run it
resumed, and transfer-ft1A1B_1_4's job 257165 resumed from the snapshot at 200000 after job
253002 had resumed from 270000, so the older job's tests at 271000-273000 are the ones replaced.
glog writes no year: dates are read on a circle, cut at the longest gap between segments.

A segment that ends inside a test (its job was killed mid-test) loses that test; one that
logged no test (the job died early) adds no point.  Both are listed in `Curve.left_out`.
`read_log` refuses a curve that lost a test no later segment repeats (a curve that silently
lost its best points would move the paper's statistic); `read_logs`, for a folder of the
authors' jobs, keeps the curve and lists the loss for the report.  Anything else that cannot
be read is a `LogError`, never a shorter curve.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replicate.errors import ReplicateError

FORMAT_2014 = "caffe-2014"
FORMAT_MODERN = "caffe"
FORMAT_METRICS = "metrics.jsonl"

# glog's prefix: severity+date (MMDD or YYYYMMDD), time, thread id, file:line]
_PREFIX = re.compile(r"^[IWEF](\d{4}|\d{8}) +(\d\d):(\d\d):(\d\d\.\d+) +\d+ +[^\s\]]+:\d+\] ?")
#: Seconds in the year that glog's MMDD dates are placed on (31-day months: only order matters).
_YEAR = 12 * 31 * 86400
_TEST_2014 = re.compile(r"Iteration (\d+), Testing net")
_TEST_MODERN = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_SCORE_2014 = re.compile(r"Test score #(\d+): (\S+)")
_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = (\S+)(?: \(\* \S+ = \S+ loss\))?")
_TRAIN_LOSS = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = (\S+)")
_LR = re.compile(r"Iteration (\d+), lr = (\S+)")
_SOLVING = re.compile(r"Solving .*")
#: Fields of a metrics.jsonl record as json.dumps writes them, each only once whole.
_RECORD_KIND = re.compile(r'"kind": "(\w+)"')
_RECORD_ITER = re.compile(r'"iter": (\d+)[,}]')
_RECORD_NET = re.compile(r'"net": (\d+)[,}]')
#: How the lines inside a test begin (both formats).
_TEST_LINES = ("Test net output #", "Test score #")
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


@dataclass(frozen=True)
class LeftOut:
    """A segment, or a test, that gives the curve no point.  `lost`: a test the curve lacks
    because no other segment logged it."""

    path: str
    line: int
    what: str
    lost: bool = False


@dataclass
class Curve:
    """Everything the logs of one run say about its progress."""

    source: str
    format: str
    val: list[ValPoint] = field(default_factory=list)
    train: list[TrainPoint] = field(default_factory=list)
    done: bool = False
    #: How the run trained (metrics.jsonl's `config` record: precision, device, ...); the
    #: last one when a run was resumed; None for Caffe logs.
    config: dict[str, Any] | None = None
    left_out: list[LeftOut] = field(default_factory=list)
    #: Every load of weights the run made, in the order it ran (the `weights` of each config
    #: record: a fresh start's `--weights`, then each resume's snapshot); empty for Caffe logs.
    loads: list[dict[str, Any]] = field(default_factory=list)
    #: The config record of the run's fresh start (its `weights`: None for the fillers); None
    #: where the logs do not hold it (Caffe logs, a run whose first record is a resume).
    start: dict[str, Any] | None = None


@dataclass(frozen=True)
class Cut:
    """The test a segment ended inside: its iteration and line, why it is incomplete, and
    whether the segment ended with its file (rather than at a restart)."""

    iter: int
    line: int
    reason: str
    at_end: bool


@dataclass
class Segment:
    """What one process logged: from `line` of `source` to the next start or the file's end.
    `start` and `last` are the first and last iterations it logged (None: it logged none)."""

    source: str
    line: int
    format: str | None = None
    start: int | None = None
    last: int | None = None
    val: list[ValPoint] = field(default_factory=list)
    train: list[TrainPoint] = field(default_factory=list)
    done: bool = False
    config: dict[str, Any] | None = None
    cut: Cut | None = None
    #: A `Solving` line or an iteration was seen: the next `Solving` starts a new segment.
    started: bool = False
    #: When its first glog line was written: (year or None, seconds into the year).
    time: tuple[int | None, float] | None = None

    def goes_back(self, iteration: int) -> bool:
        """An iteration below the last one logged: a restart appended to the same log."""
        return self.last is not None and iteration < self.last

    def reach(self, iteration: int) -> None:
        self.start = iteration if self.start is None else self.start
        self.last = iteration
        self.started = True


def _number(text: str, path: str, lineno: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise LogError(path, f"line {lineno}: {text!r} is not a number") from None


def _resume(points: list, iteration: int) -> None:
    """Within one segment: a second record of an iteration replaces the first."""
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


def _glog_time(match: re.Match[str]) -> tuple[int | None, float]:
    """(year or None, seconds into the year) of a glog prefix."""
    date = match[1]
    year = int(date[:4]) if len(date) == 8 else None
    days = (int(date[-4:-2]) - 1) * 31 + int(date[-2:]) - 1
    return year, (days * 24 + int(match[2])) * 3600 + int(match[3]) * 60 + float(match[4])


class _Reader:
    """One Caffe log read line by line into segments."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.segments = [Segment(path, 1)]
        self.test: _Test | None = None
        self.formats: set[str] = set()

    @property
    def seg(self) -> Segment:
        return self.segments[-1]

    def close(self) -> None:
        """The open test is over: it must be complete."""
        if self.test is None:
            return
        block, self.test = self.test, None
        if block.net != 0:
            return
        where = f"test at iteration {block.iter} (line {block.lineno})"
        if not block.scores:
            raise LogError(self.path, f"{where} has no scores")
        if block.modern:
            point = _val_point(block.iter, block.scores, block.weighted, self.path, where)
        else:
            if set(block.scores) != {"0", "1"}:
                raise LogError(self.path, f"{where}: expected Test score #0 and #1, found "
                                          f"{', '.join('#' + k for k in sorted(block.scores))}")
            point = _val_point(block.iter, {"accuracy": block.scores["0"],
                                            "loss": block.scores["1"]}, ["loss"], self.path, where)
        _resume(self.seg.val, point.iter)
        self.seg.val.append(point)

    def end_segment(self, at_end: bool) -> None:
        """The process stopped: a test still open was cut off, not corrupt."""
        block = self.test
        try:
            self.close()
        except LogError as err:
            assert block is not None
            self.seg.cut = Cut(block.iter, block.lineno, err.reason, at_end)

    def restart(self, lineno: int) -> None:
        self.end_segment(at_end=False)
        self.segments.append(Segment(self.path, lineno))

    def reach(self, iteration: int, lineno: int) -> None:
        if self.seg.goes_back(iteration):
            self.restart(lineno)
        self.seg.reach(iteration)

    def unfinished(self, lineno: int, raw: str) -> None:
        """The file's last line, `raw`, lacks its newline: a write the run never finished.  Its
        text may be cut short anywhere, a number included, so it is not read.  If it may be one
        of the open test's lines, that test is cut, as if the log had ended inside it."""
        prefix = _PREFIX.match(raw)
        msg = raw[prefix.end():] if prefix else ""
        may_be_test = prefix is None or any(k.startswith(msg) or msg.startswith(k) for k in _TEST_LINES)
        block = self.test
        if block is not None and block.net == 0 and may_be_test:
            self.test = None
            self.seg.cut = Cut(block.iter, block.lineno, f"line {lineno} was never finished", at_end=True)

    def line(self, lineno: int, raw: str) -> None:
        if "\x00" in raw or "\ufffd" in raw:
            raise LogError(self.path, f"line {lineno}: binary data, not a text log")
        prefix = _PREFIX.match(raw)
        msg = (raw[prefix.end():] if prefix else raw).strip()
        if not msg:
            return
        self.dispatch(lineno, msg)
        if prefix and self.seg.time is None:  # after dispatch: a restart here starts now
            self.seg.time = _glog_time(prefix)

    def dispatch(self, lineno: int, msg: str) -> None:
        test = self.test
        if m := _SCORE_2014.fullmatch(msg):
            if test is None or test.modern:
                raise LogError(self.path, f"line {lineno}: a test score outside a 2014-style test")
            if m[1] in test.scores:
                raise LogError(self.path, f"line {lineno}: Test score #{m[1]} twice in one test")
            test.scores[m[1]] = _number(m[2], self.path, lineno)
        elif m := _OUTPUT.fullmatch(msg):
            if test is None or not test.modern:
                raise LogError(self.path, f"line {lineno}: a test net output outside a test")
            name = m[2]
            if name in test.scores:
                raise LogError(self.path, f"line {lineno}: test output {name!r} twice in one test")
            test.scores[name] = _number(m[3], self.path, lineno)
            if msg.endswith(" loss)"):
                test.weighted.append(name)
        elif (m := _TEST_MODERN.fullmatch(msg)) or (m := _TEST_2014.fullmatch(msg)):
            modern = m.re is _TEST_MODERN
            self.reach(int(m[1]), lineno)
            self.close()
            self.test = _Test(int(m[1]), int(m[2]) if modern else 0, lineno, modern)
            self.seg.format = FORMAT_MODERN if modern else FORMAT_2014
            self.formats.add(self.seg.format)
        elif m := _TRAIN_LOSS.fullmatch(msg):
            self.reach(int(m[1]), lineno)
            self.close()
            _add_train(self.seg.train, int(m[1]), loss=_number(m[2], self.path, lineno))
        elif m := _LR.fullmatch(msg):
            self.reach(int(m[1]), lineno)
            self.close()
            _add_train(self.seg.train, int(m[1]), lr=_number(m[2], self.path, lineno))
        elif _SOLVING.fullmatch(msg):
            if self.seg.started:
                self.restart(lineno)
            self.seg.started = True
        elif msg.startswith("Optimization Done"):
            self.close()
            self.seg.done = True


def parse_segments(lines: Iterable[str], path: str, whole_lines: bool = False) -> list[Segment]:
    """The segments of one Caffe log of either format, in file order; `path` names it.
    `whole_lines`: the lines come with their newlines, and a last one without it is a write the
    run never finished (`_Reader.unfinished`)."""
    reader = _Reader(path)
    for lineno, raw in enumerate(lines, 1):
        if whole_lines and not raw.endswith("\n"):
            reader.unfinished(lineno, raw)
            break
        reader.line(lineno, raw)
    reader.end_segment(at_end=True)
    if len(reader.formats) > 1:
        raise LogError(path, "mixes 2014 (`Test score #k`) and modern (`Test net output`) tests")
    return reader.segments


def _add_train(points: list[TrainPoint], iteration: int, loss: float | None = None,
               lr: float | None = None) -> None:
    """Merge a training line into the point of its iteration (Caffe logs loss and lr apart)."""
    if points and points[-1].iter == iteration:
        last = points.pop()
        loss = last.loss if loss is None else loss
        lr = last.lr if lr is None else lr
    else:
        _resume(points, iteration)
    points.append(TrainPoint(iteration, loss, lr))


def _name(path: str) -> str:
    return Path(path).name


def _left_out(segments: Sequence[Segment], taken_from: dict[int, Segment]) -> list[LeftOut]:
    """What the report lists: segments without a test and cut-off tests."""
    found = []
    for s in segments:
        if s.start is None:
            found.append(LeftOut(s.source, s.line, "empty: no iteration logged"))
        elif not s.val and s.cut is None:
            found.append(LeftOut(s.source, s.line, f"no test: iterations {s.start}-{s.last} only"))
        if s.cut is not None:
            c, other = s.cut, taken_from.get(s.cut.iter)
            ends = "the log ends" if c.at_end else "a run ends"
            if other is not None:
                found.append(LeftOut(s.source, c.line, f"{ends} inside the test at iteration "
                                                       f"{c.iter}; the curve takes it from "
                                                       f"{_name(other.source)}"))
            else:
                found.append(LeftOut(s.source, c.line, f"truncated: {ends} inside the test at "
                                                       f"iteration {c.iter} (line {c.line}) and "
                                                       f"no later run repeats it: {c.reason}",
                                     lost=True))
    return found


def chronological(segments: Sequence[Segment]) -> list[Segment]:
    """Segments in the order they ran, by the time of their first glog line.  Without a year
    the dates lie on a circle, cut at the longest gap (a run's jobs span months, not a year).
    Segments that logged nothing come first; when a segment that logged something has no
    time (metrics.jsonl, lines without glog's prefix), the order given is kept."""
    empty = [s for s in segments if s.start is None and s.time is None]
    rest = [s for s in segments if not (s.start is None and s.time is None)]
    timed = [(s.time, i, s) for i, s in enumerate(rest) if s.time is not None]
    if not timed or len(timed) < len(rest):
        return empty + rest
    if all(year is not None for (year, _), _, _ in timed):
        return empty + [s for _, _, s in sorted(timed, key=lambda t: (t[0], t[1]))]
    timed.sort(key=lambda t: (t[0][1], t[1]))
    at = [seconds for (_, seconds), _, _ in timed]
    gaps = [(at[0] + _YEAR - at[-1], 0)] + [(at[i] - at[i - 1], i) for i in range(1, len(at))]
    first = max(gaps)[1]
    return empty + [s for _, _, s in timed[first:] + timed[:first]]


def merge_segments(segments: Sequence[Segment], source: str) -> Curve:
    """One run's curve from all its segments: in the order they ran (`chronological`), a
    later segment's record of an iteration replacing an earlier one."""
    ordered = chronological(segments)
    formats = sorted({s.format for s in ordered if s.format})
    if len(formats) > 1:
        raise LogError(source, f"logs of one run in two formats ({', '.join(formats)})")
    val: dict[int, tuple[ValPoint, Segment]] = {}
    train: dict[int, TrainPoint] = {}
    config = None
    configs = [s.config for s in ordered if s.config]
    first_load = configs[0].get("weights") if configs else None
    start = configs[0] if configs and not (isinstance(first_load, dict) and first_load.get("resumed")) else None
    for s in ordered:
        val.update((p.iter, (p, s)) for p in s.val)
        train.update((t.iter, t) for t in s.train)
        config = s.config or config
    return Curve(source, formats[0] if formats else FORMAT_MODERN,
                 val=[val[i][0] for i in sorted(val)], train=[train[i] for i in sorted(train)],
                 done=ordered[-1].done, config=config,
                 left_out=_left_out(ordered, {i: s for i, (_, s) in val.items()}),
                 loads=[s.config["weights"] for s in ordered
                        if s.config and isinstance(s.config.get("weights"), dict)],
                 start=start)


def _complete(curve: Curve, empty: str) -> Curve:
    """A curve that lost no test and has at least one (`empty`: what to say otherwise)."""
    for item in curve.left_out:
        if item.lost:
            raise LogError(item.path, item.what)
    if not curve.val:
        raise LogError(curve.source, f"no validation points ({empty})")
    return curve


def parse_lines(lines: Iterable[str], path: str, whole_lines: bool = False) -> Curve:
    """Read one Caffe log of either format; `path` names it in errors."""
    return _complete(merge_segments(parse_segments(lines, path, whole_lines), path),
                     "no `Testing net` with scores")


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
    """Parse the train.log of one of our runs (or any one Caffe log file, plain or gzip); a test
    it lost is an error.  A last line without its newline was never finished (our trainer writes
    each line whole, and cuts such a line before it appends: `cut_unfinished_line`).  The
    authors' logs (`read_logs`) are read as the reconstruction of their 148 curves was checked."""
    path = Path(path)
    return parse_lines(_text_lines(path), str(path), whole_lines=True)


def read_logs(paths: Sequence[str | Path], source: str) -> Curve:
    """One run logged in several files (one per job, in the order that breaks ties: oldest
    job first).  Tests cut off and never repeated are listed in `left_out`, not errors."""
    segments = [s for p in paths for s in parse_segments(_text_lines(Path(p)), str(p))]
    curve = merge_segments(segments, source)
    if not curve.val:
        raise LogError(source, "no validation points (no `Testing net` with scores in "
                               f"{len(paths)} log file{'s' if len(paths) != 1 else ''})")
    return curve


def read_metrics(path: str | Path) -> Curve:
    """Parse our trainer's metrics.jsonl (test net #0 only); a resumed run's records are
    segmented and merged like a Caffe log's, so that both tell the same story."""
    path = Path(path)
    segments = [Segment(str(path), 1, FORMAT_METRICS)]
    for lineno, raw in enumerate(_text_lines(path), 1):
        if not raw.endswith("\n"):
            _unfinished_record(segments[-1], lineno, raw, str(path))
            break
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            kind = record["kind"]
            if kind == "config":
                if segments[-1].started:
                    segments.append(Segment(str(path), lineno, FORMAT_METRICS))
                segments[-1].config, segments[-1].started = record, True
                continue
            iteration = int(record["iter"])
        except (ValueError, KeyError, TypeError) as err:
            raise LogError(str(path), f"line {lineno}: not a metrics record ({err})") from None
        if segments[-1].goes_back(iteration):
            segments.append(Segment(str(path), lineno, FORMAT_METRICS))
        seg = segments[-1]
        seg.reach(iteration)
        if kind == "test" and record.get("net", 0) == 0:
            outputs = record.get("outputs")
            if not isinstance(outputs, dict) or not all(
                    isinstance(v, (int, float)) for v in outputs.values()):
                raise LogError(str(path), f"line {lineno}: test outputs are not numbers")
            point = _val_point(iteration, {k: float(v) for k, v in outputs.items()}, [],
                               str(path), f"line {lineno}")
            _resume(seg.val, iteration)
            seg.val.append(point)
        elif kind == "train":
            _resume(seg.train, iteration)
            seg.train.append(TrainPoint(iteration, _opt(record.get("loss")),
                                        _opt(record.get("lr"))))
        elif kind == "done":
            seg.done = True
    return _complete(merge_segments(segments, str(path)), "no test records of net 0")


def _unfinished_record(seg: Segment, lineno: int, raw: str, path: str) -> None:
    """metrics.jsonl's last line lacks its newline: a record the run never finished writing
    (each is written whole, with its newline).  A test record of net #0, even one whose kind
    cannot be read, is a test the run lost, as a log that ends inside a test; any other record
    adds nothing to the curve."""
    kind = _RECORD_KIND.search(raw)
    if kind and (kind[1] != "test" or (net := _RECORD_NET.search(raw)) and net[1] != "0"):
        return
    iteration = _RECORD_ITER.search(raw)
    if iteration is None:
        raise LogError(path, f"line {lineno} was never finished, and too little of it was written to tell "
                             "which record it was (resuming the run writes it again)")
    seg.cut = Cut(int(iteration[1]), lineno, f"line {lineno} was never finished", at_end=True)


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
