"""One trainer per run folder, on this host or any other that shares the file system.

Two trainers in one folder would append to the same logs, mix their snapshot files (which the
next resume then refuses as not belonging together), and one's `--force` or `recover` would move
the other's live files aside.  Nothing else stops that: `grid run` knows only its own processes,
`grid submit` only its own jobs, and `grid submit` submits a replacement job as soon as
`scancel` returns, while the cancelled trainer may still be writing its last snapshot.

So `train` holds an exclusive lock on `.train.lock` in the folder for its whole run.  It is a
POSIX record lock (`lockf`), not a `flock`: the process owns it, so the data workers it forks do
not hold it on after it (a `flock` belongs to the open file, which forked children share); the
kernel drops it when the process ends, however it ends; and NFS locks it on the server, for every
host.  A second trainer waits up to `WAIT_S` for it, saying so once (long enough for a stopped
trainer's snapshot, as a replacement job needs), then stops with the holder's pid and host.  On a
file system without locks (Lustre mounted without `flock`) it warns and trains unguarded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from replicate.errors import ReplicateError

LOCK_FILE = ".train.lock"
#: How long a trainer waits for the folder's lock before it gives up, in seconds.
WAIT_S = 120.0
#: errno values of a file system that does not lock, rather than of a lock held.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@contextlib.contextmanager
def hold(folder: Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold `folder`'s trainer lock while the block runs (waiting up to `wait_s`, default `WAIT_S`)."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise ReplicateError(f"cannot write in the run's folder: {path}: {err.strerror}") from None
    try:
        if _take(fd, path, WAIT_S if wait_s is None else wait_s):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                          f"{datetime.now():%Y-%m-%d %H:%M:%S}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _take(fd: int, path: Path, wait_s: float) -> bool:
    """Lock `fd`, waiting up to `wait_s`; False where the file system has no locks."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EAGAIN):
                pass  # held
            elif err.errno not in _NO_LOCKS:
                raise
            else:
                print(f"warning: cannot lock {path} ({err.strerror}): nothing stops a second trainer in this "
                      "folder", file=sys.stderr, flush=True)
                return False
        holder = _holder(fd)
        if time.monotonic() >= deadline:
            raise ReplicateError(f"{path.parent}: another trainer is training in this folder ({holder}); "
                                 f"waited {wait_s:g} s for it to stop")
        if not said:
            print(f"waiting up to {wait_s:g} s for the trainer already in {path.parent} to stop ({holder})",
                  file=sys.stderr, flush=True)
            said = True
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _holder(fd: int) -> str:
    """What the lock's holder wrote of itself: its pid, host and start."""
    return os.pread(fd, 200, 0).decode(errors="replace").strip() or "its pid is not written yet"
