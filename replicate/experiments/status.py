"""Where a grid stands: each net's state, iteration and accuracy, read from the net folders.

Nothing here asks a running process or a scheduler: the state comes from status.json (what the
runner or a SLURM job recorded) checked against the training files, so `grid status` works the
same for a local run, a cluster run or a grid copied from elsewhere.  A net recorded `running`
whose process is gone from this host shows as `stopped`; a net whose base failed or is blocked
shows as `blocked`, with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from replicate.errors import ReplicateError
from replicate.experiments import netstate
from replicate.experiments.netfiles import is_finished, last_iteration, newest_solverstate, read_metrics
from replicate.experiments.planfile import Plan, PlannedNet

WAITING = "waiting"
STATES = (netstate.DONE, netstate.RUNNING, netstate.QUEUED, WAITING, netstate.STOPPED,
          netstate.BLOCKED, netstate.FAILED)


@dataclass(frozen=True)
class NetReport:
    name: str
    state: str
    iter: int | None
    max_iter: int
    accuracy: float | None  # latest validation value of the metric
    best: float | None  # highest validation value so far
    note: str  # why failed/blocked, or where it runs


def progress(net: PlannedNet, metric: str = "accuracy") -> tuple[int | None, float | None, float | None]:
    """Latest iteration, latest and best validation `metric` (test net #0) in metrics.jsonl."""
    values = []
    for record in read_metrics(net.dir, frozenset({"test"})):
        outputs = record.get("outputs")
        if record.get("net", 0) == 0 and isinstance(outputs, dict) and isinstance(outputs.get(metric), (int, float)):
            values.append(float(outputs[metric]))
    return last_iteration(net.dir), (values[-1] if values else None), (max(values) if values else None)


def _own_state(net: PlannedNet, record: dict[str, Any]) -> tuple[str, str]:
    if is_finished(net):
        return netstate.DONE, ""
    state = record.get("state")
    where = ", ".join(f"{label} {record[key]}" for key, label in (("gpu", "GPU"), ("job_id", "job"))
                      if record.get(key) is not None)
    if state == netstate.RUNNING:
        if netstate.process_alive(record) is False:
            return netstate.STOPPED, f"trainer process {record.get('pid')} is gone"
        return netstate.RUNNING, where
    if state == netstate.QUEUED:
        return netstate.QUEUED, where
    if state in (netstate.FAILED, netstate.BLOCKED):
        return state, record.get("error") or ""
    snapshot = newest_solverstate(net)
    if state == netstate.STOPPED or snapshot is not None or last_iteration(net.dir) is not None:
        return netstate.STOPPED, f"resumes from {snapshot.name}" if snapshot else "no snapshot: restarts fresh"
    return WAITING, ""


def collect(plan: Plan, metric: str = "accuracy") -> list[NetReport]:
    """One report per net of the plan, bases before their dependants."""
    reports: dict[str, NetReport] = {}
    for net in plan.ordered():
        state, note = _own_state(net, netstate.read_status(net.dir))
        base = reports.get(net.depends_on) if net.depends_on else None
        if base and base.state in (netstate.FAILED, netstate.BLOCKED) and state in (
            WAITING, netstate.QUEUED, netstate.STOPPED
        ):
            state, note = netstate.BLOCKED, f"base net {base.name!r} {base.state}"
        try:
            iteration, accuracy, best = progress(net, metric)
        except ReplicateError as err:  # one net's unreadable file must not hide the others
            iteration, accuracy, best = last_iteration(net.dir), None, None
            note = "; ".join(filter(None, (note, str(err))))
        reports[net.name] = NetReport(net.name, state, iteration, net.max_iter, accuracy, best, note)
    order = [n.name for n in plan.nets]
    return sorted(reports.values(), key=lambda r: order.index(r.name))


def totals(reports: list[NetReport]) -> dict[str, int]:
    return {state: sum(r.state == state for r in reports) for state in STATES}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(reports: list[NetReport]) -> str:
    """A fixed-width table for people, one net a line, and a line of totals."""
    header = ("NET", "STATE", "ITER", "ACC", "BEST", "NOTE")
    rows = [header] + [
        (r.name, r.state, f"{'-' if r.iter is None else r.iter}/{r.max_iter}",
         _number(r.accuracy), _number(r.best), r.note)
        for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    counts = ", ".join(f"{n} {state}" for state, n in totals(reports).items() if n)
    lines.append(f"{len(reports)} nets: {counts}")
    return "\n".join(line.rstrip() for line in lines)


def to_json(reports: list[NetReport]) -> dict[str, Any]:
    return {"nets": [asdict(r) for r in reports], "totals": totals(reports)}
