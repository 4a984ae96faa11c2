"""The paper's own numbers: results/paper_reference.csv, one row per network the authors logged,
and results/original_curves.csv.gz, every validation point of those logs (name, iter, top1, loss).

The csv was computed from the authors' raw logs with the statistics of `stats` (the tests
recompute every row from the curves), so our runs are compared with the paper on the same footing.
"""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from replicate.checkout import PROJECT_DIR, in_checkout
from replicate.errors import ReplicateError
from replicate.results.logs import ValPoint
from replicate.results.stats import PAPER_COLUMNS

#: The repository's copy (replicate.checkout).
DATA = PROJECT_DIR / "results"
DEFAULT_PATH = DATA / "paper_reference.csv"
DEFAULT_CURVES = DATA / "original_curves.csv.gz"


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
    path = in_checkout(Path(path))
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


def load_paper_curves(path: str | Path = DEFAULT_CURVES) -> dict[str, list[ValPoint]]:
    """The authors' validation curves by net name, in iteration order."""
    path = in_checkout(Path(path))
    curves: dict[str, list[ValPoint]] = defaultdict(list)
    try:
        with gzip.open(path, "rt", newline="") as handle:
            for row in csv.DictReader(handle):
                curves[row["name"]].append(
                    ValPoint(int(row["iter"]), float(row["top1"]), float(row["loss"])))
    except (OSError, EOFError) as err:
        raise ReplicateError(f"{path}: cannot read the paper's curves ({err})") from None
    except (KeyError, ValueError) as err:
        raise ReplicateError(f"{path}: not a curves csv ({err})") from None
    return dict(curves)
