"""Caffe image lists (`<path> <label>` a line) as convert_imageset and ImageData read them.

Caffe splits each line at its *last* space, so paths may contain spaces.  Where Caffe's `atoi`
silently turns a bad label into 0, we stop: a list whose labels are not integers is a wrong file,
and training on it would quietly produce garbage.
"""

from __future__ import annotations

import os
import re

from replicate.errors import ReplicateError

#: What C's atoi reads as a whole number (Python's int() also takes "1_000" and other scripts' digits).
_LABEL = re.compile(r"[+-]?[0-9]+")


def image_list_lines(path: str | os.PathLike[str]) -> list[tuple[str, int] | None]:
    """Every line of the list as (path, label), None for a blank one: convert_imageset numbers
    its records by line, so a blank line (which it fails to read and skips) spends a number.
    A bad line names file:line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ReplicateError(f"{path}: cannot read image list ({err})") from None
    entries: list[tuple[str, int] | None] = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            entries.append(None)
            continue
        name, sep, label = line.rpartition(" ")
        if not sep or not name or not _LABEL.fullmatch(label.strip()):
            raise ReplicateError(f"{path}:{number}: expected '<path> <integer label>', got {line!r}")
        value = int(label)
        if not -2**31 <= value < 2**31:
            raise ReplicateError(f"{path}:{number}: label {value} does not fit a Datum's int32 label")
        entries.append((name, value))
    if not any(entries):
        raise ReplicateError(f"{path}: image list is empty")
    return entries


def read_image_list(path: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """(path, label) pairs in list order; blank lines are skipped."""
    return [entry for entry in image_list_lines(path) if entry is not None]
