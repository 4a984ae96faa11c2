"""Snapshots written behind the training loop, and old ones pruned.

A CaffeNet snapshot is two files of ~233 MB each; serializing and writing them in the loop would
stop training for seconds each time (45 times per net in the paper's schedule).  The solver copies
its weights and history to host memory once (all the loop waits for) and hands a job to
`SnapshotWriter`, whose thread builds the messages, serializes them and writes each file through a
temporary file and a rename, in the order the job gives: the .caffemodel first and the
.solverstate last, so a .solverstate on disk always names a complete .caffemodel and a resume (ours
or the grid's) never loads a half-written set.  One set is in flight at a time; a failed write
(disk full) is raised in the training thread at the next snapshot or when the solver finishes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path


class SnapshotWriter:
    """Runs one snapshot job at a time on a background thread (see the module doc)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Start `job` once the previous one has finished (its error, if any, is raised here)."""
        self.wait()
        # Not a daemon: an interpreter that exits (an error elsewhere) still finishes the files.
        self._thread = threading.Thread(target=self._run, args=(job,), name="snapshot-writer")
        self._thread.start()

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as err:  # re-raised in the training thread by wait()
            self._error = err

    def wait(self) -> None:
        """Block until the job in flight is on disk; raise its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def snapshot_iterations(prefix: Path) -> dict[int, list[Path]]:
    """{iteration: files} of the snapshots `<prefix>_iter_<N>.<ext>` in the prefix's folder."""
    if not prefix.parent.is_dir():
        return {}
    pattern = re.compile(re.escape(prefix.name) + r"_iter_(\d+)\.[A-Za-z0-9_.-]+")
    found: dict[int, list[Path]] = {}
    for path in prefix.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found.setdefault(int(match.group(1)), []).append(path)
    return found


def prune(prefix: Path, keep: int, current: int, final: int) -> list[Path]:
    """Remove the snapshots older than the `keep` newest up to iteration `current`, sparing the
    final one (iteration `final`) and any newer than `current`; returns the removed files.

    Each old set loses its .solverstate first (what a resume looks for) and its .caffemodel last,
    so no .solverstate is ever left without its weights file or its resume sidecar.  `keep` 0
    keeps everything (Caffe's behaviour).
    """
    if keep <= 0:
        return []
    sets = snapshot_iterations(prefix)
    older = sorted(i for i in sets if i <= current)
    removed = []
    for iteration in older[:-keep]:
        if iteration == final:
            continue
        for path in sorted(sets[iteration], key=lambda p: (p.suffix != ".solverstate") + (p.suffix == ".caffemodel")):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
