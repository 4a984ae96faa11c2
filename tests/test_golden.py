"""Runs every golden case (a folder holding meta.json) under the fixture roots against our engine.

By default both of the repo's roots of real Caffe's outputs are checked: `golden/caffe` and
`golden/caffe_grad` (the same nets rerun with force_backward, so Caffe's gradients are real).
`REPLICATE_GOLDEN_DIR` replaces them with one root of the same format (other random values, same
case names).  Test ids are `<root name>/<case>`.  Each module of
`golden_checks` claims cases through `handles(name)`; a case no module (or more than one module)
claims fails, so no fixture is silently skipped.  Modules named `_*` are shared helpers.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import golden_checks

_GOLDEN = Path(__file__).parent / "golden"
ROOTS = (
    [Path(os.environ["REPLICATE_GOLDEN_DIR"])]
    if os.environ.get("REPLICATE_GOLDEN_DIR")
    else [_GOLDEN / "caffe", _GOLDEN / "caffe_grad"]
)


def _case_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("meta.json"))


_CASES = [(root, case) for root in ROOTS for case in _case_dirs(root)]


def _checkers() -> list[ModuleType]:
    return [
        importlib.import_module(f"golden_checks.{info.name}")
        for info in pkgutil.iter_modules(golden_checks.__path__)
        if not info.name.startswith("_")
    ]


def _id(root_case: tuple[Path, Path]) -> str:
    root, case = root_case
    return f"{root.name}/{case.relative_to(root).as_posix()}"


@pytest.mark.parametrize("root", ROOTS, ids=lambda r: r.name)
def test_golden_root_has_cases(root: Path) -> None:
    assert _case_dirs(root), f"no golden case (folder with meta.json) under {root}"


@pytest.mark.parametrize("root_case", _CASES, ids=_id)
def test_golden_case(root_case: tuple[Path, Path]) -> None:
    root, case = root_case
    name = case.relative_to(root).as_posix()
    claimed = [m for m in _checkers() if m.handles(name)]
    assert len(claimed) == 1, (
        f"golden case {name!r} must be claimed by exactly one golden_checks module, "
        f"got {[m.__name__ for m in claimed]}"
    )
    claimed[0].check(case)
