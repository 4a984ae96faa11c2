"""An earlier run moved aside while `train --force` starts its replacement, never lost to a failed start.

`--force` does not delete the earlier run's logs and snapshots: it moves each file into a
`.earlier-run/` folder beside it (a rename: nothing is copied; the earlier run's disk is freed at
the new run's first snapshot rather than at its start) and deletes them only once the new run has
written its first snapshot, or has ended without error when its solver snapshots
nothing.  A start that fails before that (a missing weights file, data source or mean, a
diverged loss, a full disk, a second Ctrl-C) deletes what it wrote and moves the earlier run
back.  A process killed in between (kill -9, a power cut) leaves the folder to `recover`, which
the next `train` in that folder runs first: if the new run had written a snapshot it finishes
the deletion, otherwise it puts the earlier run back.  At every moment one of the two runs is
whole on disk.

The list of moves says which way they go: `moving.json` (written before the first rename, and
again before a move back) means "put these files back"; `moved.json` (after the last rename)
means "the replacement may have started: keep it if it has a snapshot, else put them back".
So a process killed halfway through any of the moves is finished the right way too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from replicate.io.binary import remove_temporaries, write_atomic
from replicate.solver.outputs import LOG_FILES, newest_solverstate, snapshots

ASIDE = ".earlier-run"
MOVING, MOVED = "moving.json", "moved.json"


def aside_path(path: Path) -> Path:
    """Where `path` waits while its replacement starts: `.earlier-run/` in its own folder (the
    same file system, so the move is a rename)."""
    return path.parent / ASIDE / path.name


class Aside:
    """The files of an earlier run in `folder` (snapshots named by `prefix`), moved aside."""

    def __init__(self, folder: Path, prefix: Path, files: Sequence[Path]) -> None:
        self.folder, self.prefix, self.files = folder, prefix, list(files)
        self.settled = False

    @classmethod
    def move(cls, folder: Path, prefix: Path, files: Sequence[Path]) -> Aside:
        """Move `files` aside, the list of moves on disk before the first one."""
        aside = cls(folder, prefix, files)
        record = folder / ASIDE
        record.mkdir(exist_ok=True)
        write_atomic(record / MOVING, _listing(folder, files))
        try:
            for path in files:
                aside_path(path).parent.mkdir(exist_ok=True)
                os.replace(path, aside_path(path))
            os.replace(record / MOVING, record / MOVED)
        except BaseException:
            _move_back(folder, files)
            raise
        return aside

    def discard(self) -> None:
        """The replacement stands (its first snapshot is on disk): delete the earlier run."""
        if not self.settled:
            self.settled = True
            for path in self.files:
                aside_path(path).unlink(missing_ok=True)
            _remove_folders(self.folder, self.files)

    def restore(self) -> None:
        """The replacement failed before its first snapshot: delete what it wrote, then put the
        earlier run back (the list renamed back to `moving.json` first, so that a process
        killed meanwhile is finished by `recover` as a move back, never as a discard)."""
        if not self.settled:
            self.settled = True
            for path in _new_run(self.folder, self.prefix):
                path.unlink(missing_ok=True)
            record = self.folder / ASIDE
            os.replace(record / MOVED, record / MOVING)
            _move_back(self.folder, self.files)


def _listing(folder: Path, files: Sequence[Path]) -> bytes:
    """The files relative to `folder`, so that a folder moved or copied whole still settles."""
    return (json.dumps([os.path.relpath(p, folder) for p in files], indent=1) + "\n").encode()


def _new_run(folder: Path, prefix: Path) -> list[Path]:
    """The replacement's logs and snapshot files (the earlier run's are all aside)."""
    return [folder / name for name in LOG_FILES] + [p for _, p in snapshots(prefix)]


def _move_back(folder: Path, files: Sequence[Path]) -> None:
    for path in files:
        if aside_path(path).is_file():
            os.replace(aside_path(path), path)
    _remove_folders(folder, files)


def _remove_folders(folder: Path, files: Sequence[Path]) -> None:
    """The list of moves, then the `.earlier-run/` folders that are empty (a snapshot folder
    shared by several solvers may hold another run's)."""
    record = folder / ASIDE
    for name in (MOVING, MOVED):
        (record / name).unlink(missing_ok=True)
    if record.is_dir():
        remove_temporaries(record, MOVING)
    for parent in {aside_path(p).parent for p in files} | {record}:
        try:
            parent.rmdir()
        except OSError:
            pass


def recover(folder: Path, prefix: Path) -> str | None:
    """Settle an earlier run that a killed `train --force` left aside in `folder`; what was done,
    or None when nothing was aside."""
    record = folder / ASIDE
    for name in (MOVED, MOVING):
        if (record / name).is_file():
            files = [Path(os.path.normpath(folder / p)) for p in json.loads((record / name).read_text())]
            break
    else:
        if record.is_dir():  # killed before the list was on disk: nothing was moved yet
            _remove_folders(folder, [])
        return None
    if name == MOVED and newest_solverstate(prefix) is not None:
        Aside(folder, prefix, files).discard()
        return (f"deleted the earlier run that a killed `train --force` had moved to {record} "
                f"(its replacement had written a snapshot)")
    if name == MOVED:
        Aside(folder, prefix, files).restore()
    else:
        _move_back(folder, files)
    return (f"moved back the earlier run from {record}: the `train --force` that replaced it "
            f"stopped before its first snapshot")
