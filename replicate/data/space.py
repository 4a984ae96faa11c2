"""Disk space: refuse before writing what cannot fit, and say a full disk in one line.

A raw ILSVRC2012 store is ~262 GB and an exported LMDB of one set as much again; a job that fills
the disk hours in, on a shared file system with a quota, costs those hours and can leave other
users' jobs without space.  So a writer estimates its bytes first and refuses, in one line, when
the file system has fewer free (a quota smaller than the free space is not seen: statvfs does not
know it).  Should the disk fill anyway, the error (ENOSPC, or EDQUOT for a quota) becomes one line
that says what was kept and how to resume.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from replicate.errors import ReplicateError


def size_text(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def require_space(path: Path, need: int, what: str) -> None:
    """Refuse (one line) to write `need` more bytes under `path` where its file system lacks them."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise ReplicateError(f"{path}: {what} needs ~{size_text(need)} more and {where} has {size_text(free)} free; "
                             "free space or write elsewhere")


def disk_full(err: BaseException) -> bool:
    """Whether `err` is a full disk or an exceeded quota."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
