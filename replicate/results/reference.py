"""The paper's own numbers: results/paper_reference.csv, one row per network the authors logged.

It was computed from the authors' raw logs with the statistics of `stats` (the tests recompute
every row from their curves), so our runs are compared with the paper on the same footing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from replicate.errors import ReplicateError
from replicate.results.stats import PAPER_COLUMNS

#: The repository's copy (the package runs from its checkout: `pip install -e .`).
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "results" / "paper_reference.csv"


@dataclass(frozen=True)
class PaperNet:
    name: str
    family: str
    split: str
    n: int
    points: int
    best10_top1: float
    final_top1: float
    final_iter: int
    min10_valid_loss: float


def load_reference(path: str | Path = DEFAULT_PATH) -> dict[str, PaperNet]:
    """Rows by name; a missing file or column is a one-line error."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = set(PAPER_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise ReplicateError(f"{path}: missing columns {', '.join(sorted(missing))}")
            rows = list(reader)
    except OSError as err:
        raise ReplicateError(f"{path}: cannot read the paper's numbers ({err.strerror})") from None
    try:
        return {r["name"]: PaperNet(r["name"], r["family"], r["split"], int(r["n"]),
                                    int(r["points"]), float(r["best10_top1"]),
                                    float(r["final_top1"]), int(r["final_iter"]),
                                    float(r["min10_valid_loss"])) for r in rows}
    except ValueError as err:
        raise ReplicateError(f"{path}: bad number ({err})") from None
