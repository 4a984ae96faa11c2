"""Keep freed CPU memory in the process so big per-iteration tensors do not page-fault anew.

glibc serves allocations above its mmap threshold (128 KiB..32 MiB) with fresh mmap'd pages and
returns them on free, so each training iteration of CaffeNet pays page faults and zeroing for
~600 MB of activations and gradients (fc6's weight gradient alone is 151 MB): ~40 ms of a 245 ms
CPU step.  Serving them from the heap and not trimming it makes later iterations reuse warm
pages.  This changes only where memory comes from, never a value; it is a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def keep_freed_memory() -> bool:
    """Ask glibc malloc to never mmap and never trim; True if it accepted (idempotent)."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success.  INT_MAX is the largest trim threshold it takes.
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done
