"""Runs every golden case (a folder holding meta.json) under the fixture root against our engine.

The root comes from `REPLICATE_GOLDEN_DIR` (default: the repo's copy of real Caffe's outputs), so
a second root of the same format can be checked by pointing the runner at it.  Each module of
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

ROOT = Path(os.environ.get("REPLICATE_GOLDEN_DIR", Path(__file__).parent / "golden" / "caffe"))


def _case_dirs() -> list[Path]:
    return sorted(p.parent for p in ROOT.rglob("meta.json"))


def _checkers() -> list[ModuleType]:
    return [
        importlib.import_module(f"golden_checks.{info.name}")
        for info in pkgutil.iter_modules(golden_checks.__path__)
        if not info.name.startswith("_")
    ]


def _name(case: Path) -> str:
    return case.relative_to(ROOT).as_posix()


def test_golden_root_has_cases() -> None:
    assert _case_dirs(), f"no golden case (folder with meta.json) under {ROOT}"


@pytest.mark.parametrize("case", _case_dirs(), ids=_name)
def test_golden_case(case: Path) -> None:
    name = _name(case)
    claimed = [m for m in _checkers() if m.handles(name)]
    assert len(claimed) == 1, (
        f"golden case {name!r} must be claimed by exactly one golden_checks module, "
        f"got {[m.__name__ for m in claimed]}"
    )
    claimed[0].check(case)
