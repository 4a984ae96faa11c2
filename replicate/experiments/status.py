"""Where a grid stands: each net's state, iteration and accuracy, read from the net folders.

Nothing here asks a running process or a scheduler: the state comes from status.json (what the
runner or a SLURM job recorded) checked against the training files, so `grid status` works the
same for a local run, a cluster run or a grid copied from elsewhere.  A net recorded `running`
whose process is gone from this host shows as `stopped`; a net whose base failed or is blocked
shows as `blocked`, with the reason.

The metric shown is any output of test net #0 (`accuracy` by default).  Its best value is the
lowest for an output whose name holds "loss" (Caffe's loss layers name their tops `loss`,
`loss1/loss`, ...; the paper's nets test `accuracy` and `loss`) and the highest for any other:
metrics.jsonl records values, not which layer made them, and a name rule reads the same for a
grid trained here, by Caffe, or copied from elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from replicate.errors import ReplicateError
from replicate.experiments import netstate
from replicate.experiments.netfiles import is_finished, last_iteration, newest_solverstate, read_metrics
from replicate.experiments.planfile import Plan, PlannedNet
from replicate.experiments.squeue import pending_note

WAITING = "waiting"
STATES = (netstate.DONE, netstate.RUNNING, netstate.QUEUED, WAITING, netstate.STOPPED,
          netstate.BLOCKED, netstate.FAILED)


@dataclass(frozen=True)
class NetReport:
    name: str
    state: str
    iter: int | None
    max_iter: int
    accuracy: float | None  # latest validation value of the metric (named so for --json's readers)
    best: float | None  # best validation value so far: see lower_is_better
    note: str  # why failed/blocked, or where it runs


def lower_is_better(metric: str) -> bool:
    """A loss is best at its minimum, anything else (accuracy) at its maximum: see the module."""
    return "loss" in metric.lower()


def _test_outputs(net: PlannedNet) -> list[dict[str, Any]]:
    """The outputs of every test of test net #0 in metrics.jsonl, oldest first."""
    return [record["outputs"] for record in read_metrics(net.dir, frozenset({"test"}))
            if record.get("net", 0) == 0 and isinstance(record.get("outputs"), dict)]


def _latest_and_best(tests: list[dict[str, Any]], metric: str) -> tuple[float | None, float | None]:
    values = [float(o[metric]) for o in tests if isinstance(o.get(metric), (int, float))]
    if not values:
        return None, None
    return values[-1], (min if lower_is_better(metric) else max)(values)


def _own_state(net: PlannedNet, record: dict[str, Any], queued: Mapping[str, str] | None) -> tuple[str, str]:
    if is_finished(net):
        return netstate.DONE, ""
    state = record.get("state")
    where = ", ".join(f"{label} {record[key]}" for key, label in (("gpu", "GPU"), ("job_id", "job"))
                      if record.get(key) is not None)
    job = record.get("job_id")
    if state in (netstate.RUNNING, netstate.QUEUED) and job and queued is not None and job not in queued:
        return netstate.STOPPED, (f"job {job} left SLURM's queue unfinished (its requeues ran out, or SLURM "
                                  "killed or cancelled it): `grid submit` queues it again")
    if state == netstate.RUNNING:
        if netstate.process_alive(record) is False:
            return netstate.STOPPED, f"trainer process {record.get('pid')} is gone"
        return netstate.RUNNING, where
    if state == netstate.QUEUED:
        pending = pending_note(queued.get(job, "")) if job and queued is not None else ""
        return netstate.QUEUED, ", ".join(filter(None, (where, pending)))
    if state in (netstate.FAILED, netstate.BLOCKED):
        return state, record.get("error") or ""
    snapshot = newest_solverstate(net)
    if state == netstate.STOPPED or snapshot is not None or last_iteration(net.dir) is not None:
        return netstate.STOPPED, f"resumes from {snapshot.name}" if snapshot else "no snapshot: restarts fresh"
    return WAITING, ""


def collect(plan: Plan, metric: str = "accuracy", queued: Mapping[str, str] | None = None) -> list[NetReport]:
    """One report per net of the plan, bases before their dependants.  A `metric` that no net's
    tests output is an error naming those they do (a typo would otherwise show as `-`
    everywhere, like a grid that has not tested yet, which is no error).  `queued`: the jobs in
    SLURM's queue with their pending reasons (replicate.experiments.squeue), when known: a net
    recorded queued or running under a job that has left it is stopped (a job SLURM killed, or
    whose requeues ran out, records nothing), and a queued net's note says why SLURM keeps its
    job pending (one that asks for more time than its QOS allows waits for ever)."""
    reports: dict[str, NetReport] = {}
    found: set[str] = set()
    for net in plan.ordered():
        state, note = _own_state(net, netstate.read_status(net.dir), queued)
        base = reports.get(net.depends_on) if net.depends_on else None
        if base and base.state in (netstate.FAILED, netstate.BLOCKED) and state in (
            WAITING, netstate.QUEUED, netstate.STOPPED
        ):
            state, note = netstate.BLOCKED, f"base net {base.name!r} {base.state}"
        try:
            tests = _test_outputs(net)
            found.update(name for outputs in tests for name in outputs)
            iteration, (accuracy, best) = last_iteration(net.dir), _latest_and_best(tests, metric)
        except ReplicateError as err:  # one net's unreadable file must not hide the others
            iteration, accuracy, best = last_iteration(net.dir), None, None
            note = "; ".join(filter(None, (note, str(err))))
        reports[net.name] = NetReport(net.name, state, iteration, net.max_iter, accuracy, best, note)
    if found and metric not in found:
        raise ReplicateError(f"--metric {metric!r}: no net's tests output it (test net #0 in metrics.jsonl); "
                             f"the outputs found: {', '.join(sorted(found))}")
    order = [n.name for n in plan.nets]
    return sorted(reports.values(), key=lambda r: order.index(r.name))


def totals(reports: list[NetReport]) -> dict[str, int]:
    return {state: sum(r.state == state for r in reports) for state in STATES}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(reports: list[NetReport], metric: str = "accuracy") -> str:
    """A fixed-width table for people, one net a line, and a line of totals.  The metric's
    column is headed by its name, and BEST says which end is best (BEST(MIN) for a loss)."""
    best = "BEST(MIN)" if lower_is_better(metric) else "BEST"
    header = ("NET", "STATE", "ITER", metric.upper(), best, "NOTE")
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


def to_json(reports: list[NetReport], metric: str = "accuracy") -> dict[str, Any]:
    """Every net's report (`accuracy` holds the latest value of `metric`, `best` the value that
    `best_is` says), and the totals."""
    return {"metric": metric, "best_is": "min" if lower_is_better(metric) else "max",
            "nets": [asdict(r) for r in reports], "totals": totals(reports)}
