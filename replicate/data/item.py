"""One record of a data source, as the loaders pass it around, and the digest a source's identity
is named by (no torch here: store builds and mean workers import this without paying for torch)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Encoded:
    """An image still in its file format (an encoded Datum), and its (height, width) when known
    without reading its header (a store's index holds it)."""

    data: bytes
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Item:
    """One record: CHW pixels (uint8 or float32) or encoded bytes, its label, and its name."""

    payload: np.ndarray | Encoded
    label: int
    where: str


def identity_digest(data: bytes) -> str:
    """The digest a source's `identity()` names its contents by: sha256 cut to 16 hex digits,
    enough to tell two sources apart and short enough for the error that says they differ.  A
    snapshot records the identity and a resumed run compares it, so every source writes it alike."""
    return hashlib.sha256(data).hexdigest()[:16]
