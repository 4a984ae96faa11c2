"""What a training run leaves in its folder: its logs and its snapshots.

`train` looks for them before it starts, so that a second run in the same folder neither
overwrites a finished one unasked nor mixes its snapshots with an older run's; the grid asks
the same question to decide how a net continues.
"""

from __future__ import annotations

import re
from pathlib import Path

from replicate.solver.log import METRICS_FILE, TRAIN_LOG

LOG_FILES = (TRAIN_LOG, METRICS_FILE)
#: What names a snapshot's resume sidecar after its .solverstate (replicate.solver.resume).
SIDECAR_SUFFIX = ".resume.json"
#: A snapshot's files: Caffe's two and the resume sidecar.
SNAPSHOT_EXTENSIONS = (".caffemodel", ".solverstate", ".solverstate" + SIDECAR_SUFFIX)


def snapshots(prefix: Path) -> list[tuple[int, Path]]:
    """Every `<prefix>_iter_N.caffemodel` / `.solverstate` (Caffe's names) and resume sidecar,
    by iteration."""
    if not prefix.parent.is_dir():
        return []
    extensions = "|".join(re.escape(e) for e in SNAPSHOT_EXTENSIONS)
    pattern = re.compile(re.escape(prefix.name) + rf"_iter_(\d+)({extensions})")
    found = [
        (int(m.group(1)), p)
        for p in prefix.parent.iterdir()
        if (m := pattern.fullmatch(p.name)) and p.is_file()
    ]
    return sorted(found)


def newest_solverstate(prefix: Path) -> tuple[int, Path] | None:
    """The solver state with the highest iteration, or None before the first snapshot."""
    states = [(it, p) for it, p in snapshots(prefix) if p.name.endswith(".solverstate")]
    return states[-1] if states else None


def earlier_run(folder: Path, prefix: Path) -> list[Path]:
    """The logs and snapshots of an earlier run that trained in `folder` (snapshots named by
    `prefix`); none when nothing trained there.  A run stopped by bad input before its first
    iteration leaves logs without a single iteration: nothing to lose, so a corrected rerun
    just starts."""
    found = [p for _, p in snapshots(prefix)]
    if not found and not _has_iterations(folder / METRICS_FILE):
        return []
    return [folder / name for name in LOG_FILES if (folder / name).is_file()] + found


def _has_iterations(metrics: Path) -> bool:
    """metrics.jsonl holds a record of an iteration (train, test, snapshot, ...), read from its
    first 64 KB: the first such record comes within the first display interval."""
    try:
        with open(metrics, "rb") as f:
            return b'"iter":' in f.read(65536)
    except FileNotFoundError:
        return False
