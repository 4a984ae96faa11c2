"""One record of a data source, as the loaders pass it around (no torch here: store builds and
mean workers import this without paying for torch)."""

from __future__ import annotations

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
