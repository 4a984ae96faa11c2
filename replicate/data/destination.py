"""Where a data command may write: checked before anything is written or removed.

An output path is a command line away from a user's work: `export-lmdb` once replaced a whole
`data prepare` folder given as its OUT, and reading a view while replacing it destroys the view.
So a writer first refuses, in one line, an output that is, holds, or lies inside what it reads,
and an output whose parent path runs through a file (it could never be created).  A missing
parent folder is no error: the writers create it, as every data command does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from replicate.errors import ReplicateError


def _within(path: str, folder: str) -> bool:
    return path == folder or os.path.commonpath([path, folder]) == folder


def refuse_overlap(out: str | os.PathLike[str], sources: Iterable[tuple[str, str | os.PathLike[str]]],
                   written: str | os.PathLike[str] | None = None) -> None:
    """Refuse `out` (or `written`, a path it is built at, e.g. `<out>.partial`) that is, holds or
    lies inside one of `sources`, `(what, path)` pairs such as `("view", "data/half0A_train")`.
    Paths are compared after resolving symbolic links, so a link to the source is the source."""
    targets = [os.path.realpath(out)] + ([os.path.realpath(written)] if written is not None else [])
    for what, source in sources:
        real, source = os.path.realpath(source), os.path.normpath(source)
        for target in targets:
            if target == real:
                raise ReplicateError(f"{out}: is the {what} being read ({source}); give another output")
            if _within(target, real):
                raise ReplicateError(f"{out}: is inside the {what} being read ({source}); give another output")
            if _within(real, target):
                raise ReplicateError(f"{out}: holds the {what} being read ({source}); give another output")


def refuse_blocked_parent(out: str | os.PathLike[str]) -> None:
    """Refuse `out` whose nearest existing parent is not a folder (`afile/x.lmdb`)."""
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ReplicateError(f"{out}: {parent} is not a folder")
