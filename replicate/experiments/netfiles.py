"""What a training run left in a net's folder: snapshots and metrics.jsonl.

A net is finished when its metrics.jsonl ends with the `done` record at max_iter or its final
snapshot exists; it is resumable from its newest `.solverstate`.  Snapshot names follow Caffe
(`<snapshot_prefix>_iter_<N>.solverstate`, the prefix relative to the solver's folder, defaulting
to the solver's own path without extension and extended by the solver's stem when it names a
folder), so a grid started by Caffe itself is read the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replicate.errors import ReplicateError
from replicate.experiments.planfile import PlannedNet
from replicate.io.prototxt import read_solver_text
from replicate.solver import outputs
from replicate.solver.log import METRICS_FILE



@dataclass(frozen=True)
class SolverFacts:
    """The two solver settings the grid needs: where snapshots go and when training ends."""

    prefix: Path
    max_iter: int


def solver_facts(net: PlannedNet) -> SolverFacts:
    """Read the net's solver and check it agrees with the plan on max_iter."""
    if not net.solver.is_file():
        raise ReplicateError(f"{net.solver}: solver of net {net.name!r} not found")
    param = read_solver_text(net.solver)
    if param.max_iter != net.max_iter:
        raise ReplicateError(
            f"{net.solver}: max_iter {param.max_iter} disagrees with the plan's {net.max_iter} "
            f"for net {net.name!r}"
        )
    if not param.HasField("snapshot_prefix"):
        prefix = net.solver.with_suffix("")
    else:
        prefix = net.solver.parent / param.snapshot_prefix
        if prefix.is_dir():
            prefix = prefix / net.solver.stem
    return SolverFacts(prefix=prefix, max_iter=param.max_iter)


def snapshot_path(prefix: Path, iteration: int, extension: str) -> Path:
    return prefix.parent / f"{prefix.name}_iter_{iteration}{extension}"


def final_weights(net: PlannedNet) -> Path:
    """The .caffemodel Caffe writes when training ends."""
    facts = solver_facts(net)
    return snapshot_path(facts.prefix, facts.max_iter, ".caffemodel")


def newest_solverstate(net: PlannedNet) -> Path | None:
    """The solver state with the highest iteration, or None before the first snapshot."""
    newest = outputs.newest_solverstate(solver_facts(net).prefix)
    return newest[1] if newest else None


def has_earlier_run(net: PlannedNet) -> bool:
    """Logs or snapshots of an earlier attempt are in the net's folder (`train` refuses to start
    over them unless told to with --force)."""
    return bool(outputs.earlier_run(net.dir, solver_facts(net).prefix))


def read_metrics(net_dir: Path, kinds: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """The records of metrics.jsonl (only those of `kinds`, when given: a 450000-iteration run
    has some 25000 lines, mostly train records a caller may not need to parse).  A last line
    without its newline is being written right now and is left out; a broken line is an error."""
    path = net_dir / METRICS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        if not line.strip() or (kinds and not any(f'"{kind}"' in line for kind in kinds)):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ReplicateError(f"{path}:{number}: not a JSON record ({err.msg})") from None
        if not isinstance(record, dict):
            raise ReplicateError(f"{path}:{number}: a record must be a JSON object")
        if kinds is None or record.get("kind") in kinds:
            records.append(record)
    return records


def last_iteration(net_dir: Path) -> int | None:
    """The iteration of the newest complete record that has one, read from the file's end."""
    path = net_dir / METRICS_FILE
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - 16384))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    for line in reversed(tail.split("\n")[1:-1] if end > 16384 else tail.split("\n")[:-1]):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("iter"), int):
            return record["iter"]
    return None


def is_finished(net: PlannedNet) -> bool:
    """Training reached max_iter: the final `done` record or the final snapshot says so."""
    if final_weights(net).is_file():
        return True
    return any(
        r.get("kind") == "done" and r.get("iter", net.max_iter) >= net.max_iter
        for r in read_metrics(net.dir, frozenset({"done"}))
    )
