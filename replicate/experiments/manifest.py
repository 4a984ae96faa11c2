"""A generated net's manifest.json read back: the weights the net is meant to start from.

`generate` records in each net's folder what the net is (see replicate.experiments.rundirs);
`train` reads the starting weights from it, so that a transfer net run by hand does not quietly
start from random fillers where the paper copies its base net's layers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from replicate.errors import ReplicateError
from replicate.experiments.rundirs import MANIFEST_FILE


@dataclass(frozen=True)
class StartingWeights:
    """The base net's final snapshot a net starts from (`path` as seen from where we run)."""

    manifest: Path
    net: str
    base: str
    path: Path


def starting_weights(net_dir: Path) -> StartingWeights | None:
    """The weights `net_dir`'s manifest names, or None (no manifest, or a net with no base)."""
    path = net_dir / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReplicateError(f"{path}: unreadable manifest ({err})") from None
    weights = manifest.get("weights") if isinstance(manifest, dict) else None
    if not weights:
        return None
    return StartingWeights(
        manifest=path,
        net=str(manifest.get("name") or net_dir.name),
        base=str(manifest.get("weights_from") or "its base net"),
        path=Path(os.path.normpath(net_dir / weights)),
    )
