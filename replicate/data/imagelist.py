"""Caffe image lists (`<path> <label>` a line) as convert_imageset and ImageData read them.

Caffe splits each line at its *last* space, so paths may contain spaces.  Where Caffe's `atoi`
silently turns a bad label into 0, we stop: a list whose labels are not integers is a wrong file,
and training on it would quietly produce garbage.
"""

from __future__ import annotations

import os

from replicate.errors import ReplicateError


def read_image_list(path: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """(path, label) pairs in list order; blank lines are skipped, a bad line names file:line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ReplicateError(f"{path}: cannot read image list ({err})") from None
    entries = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        name, sep, label = line.rpartition(" ")
        try:
            if not sep or not name:
                raise ValueError
            entries.append((name, int(label)))
        except ValueError:
            raise ReplicateError(
                f"{path}:{number}: expected '<path> <integer label>', got {line!r}"
            ) from None
    if not entries:
        raise ReplicateError(f"{path}: image list is empty")
    return entries
