"""Read `<runs>/plan.json`, the list of nets `generate` wrote, and order it by dependency.

The plan file is the only thing the grid needs from the templates: every net's name, folder,
base net (`depends_on`), starting weights, the layers it copies from them and `max_iter`.  It is
checked as a whole on reading (duplicate names, unknown or circular dependencies, missing fields)
so that a broken plan fails before any net is started rather than hours into a run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replicate.errors import ReplicateError
from replicate.treatments import TREATMENTS, WEIGHT_LAYERS

PLAN_VERSION = 1
SOLVER_FILE = "solver.prototxt"  # a net's solver when the plan names none


@dataclass(frozen=True)
class PlannedNet:
    """One net of the plan.  Paths are absolute: `dir` resolved against the plan's folder,
    `solver` and `weights` (the base net's final .caffemodel) against `dir`, as the plan
    writes them.  `copies`: the layers it copies from `weights` by name (empty: unknown)."""

    name: str
    dir: Path
    solver: Path
    depends_on: str | None
    weights: Path | None
    max_iter: int
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    copies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    path: Path
    nets: tuple[PlannedNet, ...]

    def net(self, name: str) -> PlannedNet:
        for net in self.nets:
            if net.name == name:
                return net
        raise ReplicateError(f"{self.path}: no net named {name!r} in the plan")

    def dependants(self, name: str) -> list[PlannedNet]:
        """Every net that needs `name` finished first, directly or through another net."""
        found: list[PlannedNet] = []
        frontier = {name}
        while frontier:
            step = [n for n in self.nets if n.depends_on in frontier]
            found += step
            frontier = {n.name for n in step}
        return found

    def with_dependencies(self, names: list[str]) -> list[PlannedNet]:
        """The named nets and every net they depend on, in plan order."""
        wanted: set[str] = set()
        for name in names:
            net: PlannedNet | None = self.net(name)
            while net is not None and net.name not in wanted:
                wanted.add(net.name)
                net = self.net(net.depends_on) if net.depends_on else None
        return [n for n in self.nets if n.name in wanted]

    def ordered(self) -> list[PlannedNet]:
        """Plan order, moved only as far as dependencies need: every base before its
        dependants, and nets that others wait on before those that nobody needs."""
        needed = {n.depends_on for n in self.nets if n.depends_on}
        done: set[str] = set()
        order: list[PlannedNet] = []
        pending = sorted(self.nets, key=lambda n: n.name not in needed)
        while pending:
            ready = [n for n in pending if n.depends_on is None or n.depends_on in done]
            order += ready
            done |= {n.name for n in ready}
            pending = [n for n in pending if n.name not in done]
        return order


def _field(entry: dict[str, Any], key: str, kind: type, where: str, optional: bool = False) -> Any:
    if key not in entry:
        raise ReplicateError(f"{where}: missing field {key!r}")
    value = entry[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ReplicateError(f"{where}: field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _copies(entry: dict[str, Any], where: str) -> tuple[str, ...]:
    """The plan's `copies`; for a plan written before it had them, the paper's rule for its
    treatment (layers 1..n keep their names and are copied); else none known."""
    copies = entry.get("copies")
    if copies is not None:
        if not isinstance(copies, list) or not all(isinstance(name, str) for name in copies):
            raise ReplicateError(f"{where}: field 'copies' must be a list of layer names, got {copies!r}")
        return tuple(copies)
    treatment, n = TREATMENTS.get(entry.get("treatment")), entry.get("n")
    if entry.get("weights") and treatment is not None and treatment.copies and isinstance(n, int):
        return WEIGHT_LAYERS[:n]
    return ()


def _planned_net(entry: Any, root: Path, where: str) -> PlannedNet:
    if not isinstance(entry, dict):
        raise ReplicateError(f"{where}: a net must be a JSON object, got {entry!r}")
    name = _field(entry, "name", str, where)
    where = f"{where} ({name})"
    net_dir = root / _field(entry, "dir", str, where)
    solver = entry.get("solver", SOLVER_FILE)
    if not isinstance(solver, str):
        raise ReplicateError(f"{where}: field 'solver' must be str, got {solver!r}")
    weights = _field(entry, "weights", str, where, optional=True)
    max_iter = _field(entry, "max_iter", int, where)
    if max_iter <= 0:
        raise ReplicateError(f"{where}: max_iter must be positive, got {max_iter}")
    known = {"name", "dir", "solver", "depends_on", "weights", "max_iter", "copies"}
    return PlannedNet(
        name=name,
        dir=Path(os.path.normpath(net_dir)),
        solver=Path(os.path.normpath(net_dir / solver)),
        depends_on=_field(entry, "depends_on", str, where, optional=True),
        weights=Path(os.path.normpath(net_dir / weights)) if weights else None,
        max_iter=max_iter,
        extra={k: v for k, v in entry.items() if k not in known},
        copies=_copies(entry, where),
    )


def _check(plan: Plan) -> None:
    names = [n.name for n in plan.nets]
    for name in sorted({n for n in names if names.count(n) > 1}):
        raise ReplicateError(f"{plan.path}: net {name!r} appears more than once")
    for net in plan.nets:
        if net.depends_on is not None and net.depends_on not in names:
            raise ReplicateError(
                f"{plan.path}: net {net.name!r} depends on {net.depends_on!r}, which is not in the plan"
            )
    for net in plan.nets:
        seen = [net.name]
        while (base := plan.net(seen[-1]).depends_on) is not None:
            if base in seen:
                raise ReplicateError(f"{plan.path}: circular dependency {' -> '.join(seen + [base])}")
            seen.append(base)


def read_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and check a plan: `{"version": 1, "nets": [...]}` as `generate` writes it."""
    path = Path(path).absolute()
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise ReplicateError(f"{path}: cannot read plan ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise ReplicateError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("nets"), list):
        raise ReplicateError(f"{path}: a plan is a JSON object with a list 'nets'")
    if data.get("version") != PLAN_VERSION:
        raise ReplicateError(f"{path}: plan version {data.get('version')!r}, this grid reads version {PLAN_VERSION}")
    nets = tuple(
        _planned_net(entry, path.parent, f"{path}: nets[{i}]") for i, entry in enumerate(data["nets"])
    )
    plan = Plan(path=path, nets=nets)
    _check(plan)
    return plan
