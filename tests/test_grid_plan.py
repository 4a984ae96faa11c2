"""plan.json reading: paths, dependency order, and the errors of a broken plan."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from grid_support import final_weights, make_plan

from replicate.errors import ReplicateError
from replicate.experiments.netfiles import is_finished, newest_solverstate, solver_facts
from replicate.experiments.planfile import read_plan


def test_paths_resolve_against_plan_and_net_folders(tmp_path: Path) -> None:
    plan = read_plan(make_plan(tmp_path, [("base", None), ("tr", "base")]))
    tr = plan.net("tr")
    assert tr.dir == tmp_path / "tr"
    assert tr.solver == tmp_path / "tr" / "solver.prototxt"
    assert tr.weights == tmp_path / "base" / "snap" / "base_iter_6.caffemodel"
    assert tr.weights == final_weights(plan.net("base"))
    assert tr.extra == {"treatment": "t", "split": "0", "n": 0}


def test_order_puts_bases_first_and_keeps_plan_order_otherwise(tmp_path: Path) -> None:
    nets = [("x", None), ("t2", "t1"), ("t1", "b"), ("y", None), ("b", None), ("u", "b")]
    plan = read_plan(make_plan(tmp_path, nets))
    order = [n.name for n in plan.ordered()]
    assert order.index("b") < order.index("t1") < order.index("t2")
    assert order.index("b") < order.index("u")
    assert order[:1] == ["b"]  # the net others wait on comes before the independent ones
    assert order.index("x") < order.index("y")
    assert [n.name for n in plan.dependants("b")] == ["t1", "u", "t2"]
    assert [n.name for n in plan.with_dependencies(["t2"])] == ["t2", "t1", "b"]


def _write(tmp_path: Path, nets: object) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(nets))
    return path


GOOD = {"name": "a", "dir": "a", "depends_on": None, "weights": None, "max_iter": 10}


@pytest.mark.parametrize(
    "nets, message",
    [
        ([GOOD, GOOD], "net 'a' appears more than once"),
        ([{**GOOD, "depends_on": "zz"}], "depends on 'zz', which is not in the plan"),
        ([{**GOOD, "depends_on": "b"}, {**GOOD, "name": "b", "depends_on": "a"}], "circular dependency a -> b -> a"),
        ([{k: v for k, v in GOOD.items() if k != "max_iter"}], "nets[0] (a): missing field 'max_iter'"),
        ([{**GOOD, "max_iter": "10"}], "field 'max_iter' must be int"),
        ([{**GOOD, "max_iter": 0}], "max_iter must be positive"),
        ([["a"]], "nets[0]: a net must be a JSON object"),
        ([{**GOOD, "solver": 3}], "field 'solver' must be str"),
    ],
)
def test_broken_plans_are_refused_with_the_reason(tmp_path: Path, nets: list, message: str) -> None:
    with pytest.raises(ReplicateError, match=re.escape(message)):
        read_plan(_write(tmp_path, {"version": 1, "nets": nets}))


def test_plan_must_be_an_object_with_nets(tmp_path: Path) -> None:
    with pytest.raises(ReplicateError, match="a plan is a JSON object with a list 'nets'"):
        read_plan(_write(tmp_path, [GOOD]))
    with pytest.raises(ReplicateError, match="plan version 2, this grid reads version 1"):
        read_plan(_write(tmp_path, {"version": 2, "nets": [GOOD]}))
    (tmp_path / "bad.json").write_text("{\n  nets: 1}")
    with pytest.raises(ReplicateError, match=r"bad.json:2:3: not valid JSON"):
        read_plan(tmp_path / "bad.json")
    with pytest.raises(ReplicateError, match="cannot read plan"):
        read_plan(tmp_path / "missing.json")


def test_solver_must_agree_with_plan_on_max_iter(tmp_path: Path) -> None:
    plan = read_plan(make_plan(tmp_path, [("a", None)]))
    solver = plan.net("a").solver
    solver.write_text(solver.read_text().replace("max_iter: 6", "max_iter: 7"))
    with pytest.raises(ReplicateError, match="max_iter 7 disagrees with the plan's 6"):
        is_finished(plan.net("a"))


def test_snapshot_prefix_follows_caffe(tmp_path: Path) -> None:
    """Relative to the solver's folder; a folder gets the solver's stem; none: the solver's path."""
    plan = read_plan(make_plan(tmp_path, [("a", None)]))
    net = plan.net("a")
    assert solver_facts(net).prefix == net.dir / "snap" / "a"
    net.solver.write_text(net.solver.read_text().replace('snap/a"', 'snap"'))
    assert solver_facts(net).prefix == net.dir / "snap" / "solver"
    net.solver.write_text("max_iter: 6\n")
    assert solver_facts(net).prefix == net.dir / "solver"


def test_newest_solverstate_is_by_iteration_not_by_name(tmp_path: Path) -> None:
    net = read_plan(make_plan(tmp_path, [("a", None)], max_iter=100)).net("a")
    assert newest_solverstate(net) is None
    for it in (2, 10, 9):
        (net.dir / "snap" / f"a_iter_{it}.solverstate").write_text("")
    (net.dir / "snap" / "a_iter_50.caffemodel").write_text("")
    (net.dir / "snap" / "b_iter_60.solverstate").write_text("")
    assert newest_solverstate(net) == net.dir / "snap" / "a_iter_10.solverstate"


def test_finished_only_by_the_done_record_at_max_iter(tmp_path: Path) -> None:
    plan = read_plan(make_plan(tmp_path, [("a", None), ("b", None)]))
    a, b = plan.net("a"), plan.net("b")
    assert not is_finished(a)
    # The final snapshot comes before the final test: a run killed during that test is not done.
    (a.dir / "snap" / "a_iter_6.caffemodel").write_text("")
    (a.dir / "metrics.jsonl").write_text('{"kind": "snapshot", "iter": 6}\n{"kind": "test", "iter": 6, "net": 0}')
    assert not is_finished(a)
    with open(a.dir / "metrics.jsonl", "a") as f:
        f.write('\n{"kind": "done", "iter": 6}\n')
    assert is_finished(a)
    (b.dir / "metrics.jsonl").write_text('{"iter": 4, "kind": "train", "lr": 0.01, "loss": 1}\n{"kind": "done", "iter": 4}\n')
    assert not is_finished(b)  # done before max_iter is not finished
    with open(b.dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "done", "iter": 6}\n{"kind": "done", "iter": 6')  # a last line being written
    assert is_finished(b)
    with open(b.dir / "metrics.jsonl", "a") as f:
        f.write('}\n{"kind": "config"}\n')  # resumed again after it was done: not done until it says so
    assert not is_finished(b)
