"""The grid on a plan written by `generate`: its weights are where the base nets' final
snapshots land, and running one transfer net trains its base first."""

from __future__ import annotations

from pathlib import Path

from grid_support import FAKE_TRAIN, final_weights, invocations

from replicate.cli import main
from replicate.experiments.planfile import read_plan
from replicate.experiments.runner import GridRunner


def test_generated_demo_plan_runs_in_dependency_order(tmp_path: Path, capsys) -> None:
    assert main(["generate", "--all", "--arch", "demo", "--num-output", "10", "--splits", "0",
                 "--treatments", "base,AnB", "--out", str(tmp_path)]) == 0
    plan = read_plan(tmp_path / "plan.json")
    dependants = [n for n in plan.nets if n.depends_on]
    assert dependants and len(dependants) < len(plan.nets)
    for net in dependants:
        assert net.weights == final_weights(plan.net(net.depends_on))
    order = [n.name for n in plan.ordered()]
    assert all(order.index(n.depends_on) < order.index(n.name) for n in dependants)
    target = dependants[0]
    states = GridRunner(plan, only=[target.name], train_command=FAKE_TRAIN, report=lambda line: None,
                        poll_s=0.02).run()
    assert states == {target.depends_on: "done", target.name: "done"}
    [run] = invocations(target.dir)
    assert run["argv"][1:] == ["--weights", str(target.weights)]
    capsys.readouterr()
    assert main(["grid", "status", "--plan", str(tmp_path / "plan.json")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{len(plan.nets)} nets: 2 done, {len(plan.nets) - 2} waiting"
