"""The grid plan: which nets to train, in which order, each starting from which weights.

`plan.json` (in the output folder) is what a grid runner reads:

    {"version": 1,
     "nets": [{"name": "transfer0A0B_1_3", "dir": "transfer0A0B_1_3", "treatment": "AnB",
               "family": "transfer", "split": "0", "n": 3,
               "datasets": {"train": "half0B_train", "val": "half0B_valid",
                            "mean": "half0A_train"},
               "arch": "caffenet",
               "solver": "solver.prototxt", "max_iter": 450000,
               "depends_on": "half0A",
               "weights": "../half0A/caffe_imagenet_train_iter_450000.caffemodel",
               "copies": ["conv1", "conv2", "conv3"]}, ...]}

`datasets` are data sets (views `<data>/<set>`, `<data>/<set>/mean.binaryproto`); `dir`
is relative to the plan's folder; `solver` and `weights` are relative to the net's dir.
A net whose `depends_on` is not null may start only once that net has written `weights`, which
must hold the layers named in `copies` (the grid checks before the net starts).
Nets come in dependency order.  Generating into a folder that already holds a plan merges: an
entry of the same name is replaced, others are kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from replicate.errors import ReplicateError
from replicate.templates import SolverConfig, read_json
from replicate.treatments import GRIDS, TREATMENTS, NetSpec

PLAN_FILE = "plan.json"
PLAN_VERSION = 1


def select(specs: Iterable[NetSpec], splits: Sequence[str] | None = None,
           treatments: Sequence[str] | None = None,
           ns: Sequence[int] | None = None) -> list[NetSpec]:
    """The nets of `specs` that match every filter given.

    `splits` filters only nets that have a split (random, whole and reduced have none and are
    chosen by `treatments`); `ns` filters only nets that have an n.
    """
    for t in treatments or ():
        if t not in TREATMENTS:
            raise ReplicateError(f"unknown treatment {t!r} (known: {', '.join(TREATMENTS)})")
    chosen = []
    for spec in specs:
        if treatments is not None and spec.treatment not in treatments:
            continue
        if splits is not None and spec.split is not None and spec.split not in splits:
            continue
        if ns is not None and TREATMENTS[spec.treatment].has_n and spec.n not in ns:
            continue
        chosen.append(spec)
    return chosen


def grid_specs(grid: str = "paper", splits: Sequence[str] | None = None,
               treatments: Sequence[str] | None = None, ns: Sequence[int] | None = None) -> list[NetSpec]:
    """The nets of a named grid (`paper`: every net the authors logged; `demo`: the demo's),
    optionally narrowed."""
    if grid not in GRIDS:
        raise ReplicateError(f"unknown grid {grid!r} (known: {', '.join(GRIDS)})")
    return select(GRIDS[grid](), splits, treatments, ns)


def weights_path(base_name: str, base_solver: SolverConfig) -> str:
    """The base net's final snapshot as seen from a sibling net's directory."""
    return f"../{base_name}/{base_solver.final_caffemodel()}"


def plan_entry(spec: NetSpec, arch: str, solver: SolverConfig, solver_file: str,
               base_solver: SolverConfig | None) -> dict[str, Any]:
    """One net of the plan; `base_solver` is the solver of the net it copies (None if none)."""
    if (spec.weights_from is None) != (base_solver is None):
        raise ValueError(f"{spec.name}: base solver given iff the net copies weights")
    return {
        "name": spec.name,
        "dir": spec.name,
        "treatment": spec.treatment,
        "family": spec.family,
        "split": spec.split,
        "n": spec.n,
        "datasets": {"train": spec.train_set, "val": spec.val_set, "mean": spec.mean_set},
        "arch": arch,
        "solver": solver_file,
        "max_iter": solver.max_iter,
        "depends_on": spec.weights_from,
        "weights": (weights_path(spec.weights_from, base_solver)
                    if spec.weights_from is not None and base_solver is not None else None),
        "copies": list(spec.copied) if spec.weights_from is not None else None,
    }


def order(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dependency order, stable otherwise: nets that copy no weights first."""
    return sorted(entries, key=lambda e: e["depends_on"] is not None)


def load_plan(path: Path) -> list[dict[str, Any]]:
    """The nets of an existing plan.json; a malformed one is an error, not silently replaced."""
    data = read_json(path)
    nets = data.get("nets")
    if (data.get("version") != PLAN_VERSION
            or not isinstance(nets, list)
            or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in nets)):
        raise ReplicateError(f"{path}: not a version {PLAN_VERSION} plan (expected "
                             "{\"version\": 1, \"nets\": [{\"name\": ...}, ...]})")
    return nets


def merge(existing: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The plan holding `existing` with every net of `new` added or replaced by name."""
    replaced = {e["name"] for e in new}
    kept = [e for e in existing if e["name"] not in replaced]
    return {"version": PLAN_VERSION, "nets": order(kept + list(new))}
