"""Find the runs under a folder: our run dirs, or the authors' raw logs, or both.

- A run dir (what `generate` + `train`/`grid` leave) holds `train.log` and/or `metrics.jsonl`
  and `manifest.json`; when both files exist they must agree, and the curve comes from
  metrics.jsonl (full precision rather than glog's 6 digits).
- A raw log is `<name>.log` or `<name>.log.gz`, or a folder `<name>/` of segments, one file per
  job that worked on the net: `*.log[.gz]`, or the cluster's stdout files as the authors'
  release has them, `<yymmdd_hhmmss>_<job>.o<jobid>[.gz]` (and netbase's `catlog.oMANUAL.gz`,
  three runs pasted together).  The segments are merged by the rules of `logs` (in the order
  they ran, by glog time; files are handed over oldest job first, which decides only where a
  segment has no time).  A net's `max_iter` comes from the solver prototxt beside its logs.

Every log that cannot be read is kept in `skipped` with its reason, so the report can say what
was left out; a run dir whose training has not started, or a net folder with a solver
prototxt and no log (22 fine-tuned nets of the release), is listed in `not_started`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replicate.errors import ReplicateError
from replicate.io.prototxt import read_solver_text
from replicate.results.logs import Curve, LogError, check_agree, read_log, read_logs, read_metrics
from replicate.results.names import NetName, try_parse_name
from replicate.results.stats import NetStats, net_stats

TRAIN_LOG, METRICS, MANIFEST = "train.log", "metrics.jsonl", "manifest.json"
RUN_DIR, RAW_LOG = "run dir", "raw log"
#: A segment in a net's folder: `.log`, or a cluster job's stdout `.o<jobid>` (a number, or an
#: upper-case tag such as the release's `.oMANUAL`); gzip or not.
_SEGMENT = re.compile(r".+?\.(?:log|o(?P<job>\d+)|o[A-Z][A-Z0-9]*)(?:\.gz)?")


@dataclass(frozen=True)
class Net:
    """One readable run: its parsed name (None if outside the paper's scheme), curve, stats."""

    name: str
    kind: str
    source: str
    parsed: NetName | None
    curve: Curve
    stats: NetStats
    manifest: dict[str, Any] = field(default_factory=dict)
    #: From the manifest (run dirs) or the solver prototxt beside the logs (raw logs).
    max_iter: int | None = None

    @property
    def complete(self) -> bool | None:
        """Reached its max_iter (None when nothing says what that is)."""
        return None if self.max_iter is None else self.stats.final_iter >= self.max_iter


@dataclass(frozen=True)
class Skipped:
    name: str
    kind: str
    path: str
    reason: str


@dataclass
class Runs:
    nets: list[Net] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        """How many runs of one kind were found, readable or not."""
        return sum(1 for n in self.nets if n.kind == kind) + sum(
            1 for s in self.skipped if s.kind == kind)

    @property
    def demo(self) -> bool:
        """Runs of the scaled demo architecture, whose absolute numbers mean nothing next to
        the paper's."""
        return any(n.manifest.get("arch") == "demo" for n in self.nets)


def _is_log(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".log", ".log.gz"))


def _segment_files(folder: Path) -> list[Path]:
    """A net folder's log files, oldest job first (by job id where the name has one)."""
    found = [(m, p) for p in folder.iterdir() if p.is_file() and (m := _SEGMENT.fullmatch(p.name))]
    found.sort(key=lambda mp: (mp[0]["job"] is None, int(mp[0]["job"] or 0), mp[1].name))
    return [p for _, p in found]


def _solver_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*solver*.prototxt") if p.is_file())


def _solver_max_iter(folder: Path) -> int | None:
    """max_iter of the one solver prototxt in a raw-log folder (None: none, or several)."""
    solvers = _solver_files(folder)
    if len(solvers) != 1:
        return None
    try:
        return int(read_solver_text(solvers[0]).max_iter) or None
    except ReplicateError as err:
        raise LogError(str(solvers[0]), f"unreadable solver prototxt: {err}") from None


def _log_name(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".log")


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LogError(str(path), f"unreadable manifest: {err}") from None
    if not isinstance(data, dict):
        raise LogError(str(path), "manifest is not a JSON object")
    return data


def _run_dir_curve(folder: Path) -> Curve:
    log = read_log(folder / TRAIN_LOG) if (folder / TRAIN_LOG).is_file() else None
    metrics = read_metrics(folder / METRICS) if (folder / METRICS).is_file() else None
    if log is not None and metrics is not None:
        check_agree(log, metrics)
    curve = metrics or log
    assert curve is not None
    return curve


def _parsed(name: str, manifest: dict[str, Any]) -> NetName | None:
    parsed = try_parse_name(name)
    if parsed is None and manifest.get("family"):
        split = manifest.get("split")
        if manifest.get("per_class"):
            split = f"{int(manifest['per_class']):04d}"
        parsed = NetName(name, str(manifest["family"]), "" if split is None else str(split),
                         int(manifest.get("n") or 0), str(manifest.get("treatment", "")),
                         str(manifest.get("target", "")), manifest.get("source"))
    return parsed


def _add(runs: Runs, name: str, kind: str, source: str, read: Callable[[], Curve],
         manifest_dir: Path | None, solver_dir: Path | None = None) -> None:
    try:
        manifest = _manifest(manifest_dir) if manifest_dir else {}
        name = str(manifest.get("name") or name)
        max_iter = manifest.get("max_iter") if manifest_dir else (
            _solver_max_iter(solver_dir) if solver_dir else None)
        curve = read()
        stats = net_stats(curve.val)
    except LogError as err:
        runs.skipped.append(Skipped(name, kind, err.path, err.reason))
        return
    except ValueError as err:
        runs.skipped.append(Skipped(name, kind, source, str(err)))
        return
    runs.nets.append(Net(name, kind, source, _parsed(name, manifest), curve, stats, manifest,
                         max_iter if isinstance(max_iter, int) else None))


def _has_run_files(folder: Path) -> bool:
    return (folder / TRAIN_LOG).is_file() or (folder / METRICS).is_file()


def find_runs(root: str | Path) -> Runs:
    """Every run under `root` (or `root` itself when it is one run dir)."""
    root = Path(root)
    if not root.is_dir():
        raise ReplicateError(f"{root}: no such folder of runs")
    runs = Runs()
    folders = [root] if _has_run_files(root) else sorted(p for p in root.iterdir() if p.is_dir())
    for folder in folders:
        if _has_run_files(folder):
            _add(runs, folder.name, RUN_DIR, str(folder), lambda f=folder: _run_dir_curve(f), folder)
        elif logs := _segment_files(folder):
            _add(runs, folder.name, RAW_LOG, str(folder),
                 lambda ls=logs, f=folder: read_logs(ls, str(f)), None, folder)
        elif (folder / MANIFEST).is_file() or _solver_files(folder):
            runs.not_started.append(folder.name)
    if folders != [root]:
        for path in sorted(p for p in root.iterdir() if _is_log(p)):
            _add(runs, _log_name(path), RAW_LOG, str(path),
                 lambda p=path: read_logs([p], str(p)), None)
    names = [n.name for n in runs.nets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ReplicateError(f"{root}: runs named {', '.join(twice)} found twice "
                             "(a run dir and a raw log, or two raw logs)")
    if not runs.nets and not runs.skipped:
        raise ReplicateError(f"{root}: no run dirs (train.log / metrics.jsonl) and no raw "
                             "Caffe logs (<name>.log[.gz], <name>/*.log[.gz] or "
                             "<name>/*.o<jobid>[.gz]) found")
    return runs
