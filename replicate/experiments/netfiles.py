"""What a training run left in a net's folder: snapshots and metrics.jsonl.

A net is finished when its metrics.jsonl ends with the `done` record at max_iter, which `train`
writes after the final snapshot and the final test: the final snapshot alone is not enough (a run
killed during its last test has it), and a folder trained by Caffe itself, which has no such
record, resumes from its final solverstate for that last test.  A net is resumable from its
newest `.solverstate`.  Snapshot names follow Caffe
(`<snapshot_prefix>_iter_<N>.solverstate`, the prefix relative to the solver's folder, defaulting
to the solver's own path without extension and extended by the solver's stem when it names a
folder), so a grid started by Caffe itself is read the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from collections.abc import Iterator
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


def _newest_records(net_dir: Path) -> Iterator[dict[str, Any]]:
    """The complete records at the end of metrics.jsonl, newest first (its last 16 kB: no need to
    parse the 25000 lines of a whole run to know how it ended)."""
    path = net_dir / METRICS_FILE
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - 16384))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return
    for line in reversed(tail.split("\n")[1:-1] if end > 16384 else tail.split("\n")[:-1]):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record


def last_iteration(net_dir: Path) -> int | None:
    """The iteration of the newest complete record that has one, read from the file's end."""
    return next((r["iter"] for r in _newest_records(net_dir) if isinstance(r.get("iter"), int)), None)


def last_record(net_dir: Path) -> dict[str, Any] | None:
    """The newest complete record of metrics.jsonl: how the last attempt ended (`done`,
    `stopped`) or where it was when it was killed."""
    return next(_newest_records(net_dir), None)


def is_finished(net: PlannedNet) -> bool:
    """Training is done: the last record is `done` at max_iter (written after the final snapshot
    and the final test)."""
    solver_facts(net)  # the solver must agree with the plan
    record = last_record(net.dir)
    return record is not None and record.get("kind") == "done" and record.get("iter", -1) >= net.max_iter
