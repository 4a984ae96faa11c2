"""The grid checks a transfer net's base snapshot before the net starts: a base that finished
without a layer the plan copies (here its prototxt was edited: conv2 renamed) fails that net with
the reason, in `grid run` and in `grid submit`, and the net's trainer never starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import submitit
from grid_support import FAKE_TRAIN, invocations

from replicate.cli import main
from replicate.errors import ReplicateError
from replicate.experiments import netstate
from replicate.experiments.planfile import Plan, read_plan
from replicate.experiments.runner import GridRunner
from replicate.experiments.slurm import TrainNet, submit_plan

NET, BASE = "transfer0A0B_1_3", "half0A"


def _plan(tmp_path: Path, edit_base: bool) -> Plan:
    """The demo's half0A and AnB at n = 3 as `generate` writes them; with `edit_base`, half0A's
    conv2 renamed, so that its snapshots (the fake trainer's hold its net's layers) lack conv2."""
    assert main(["generate", "--all", "--arch", "demo", "--num-output", "10", "--splits", "0", "--ns", "3",
                 "--treatments", "base,AnB", "--out", str(tmp_path)]) == 0
    plan = read_plan(tmp_path / "plan.json")
    assert plan.net(NET).copies == ("conv1", "conv2", "conv3") and plan.net(BASE).copies == ()
    # A plan written before `copies` existed: the treatment's rule gives the same layers.
    older = json.loads((tmp_path / "plan.json").read_text())
    for entry in older["nets"]:
        del entry["copies"]
    (tmp_path / "older_plan.json").write_text(json.dumps(older))
    assert read_plan(tmp_path / "older_plan.json").net(NET).copies == plan.net(NET).copies
    if edit_base:
        net = tmp_path / BASE / "train.prototxt"
        net.write_text(net.read_text().replace('name: "conv2"', 'name: "conv2-edited"'))
    return plan


def _reason(plan: Plan) -> str:
    weights = plan.net(NET).weights
    return (f"net '{NET}': starting weights {weights} (the final snapshot of base net '{BASE}') lack the layer(s) "
            "conv2 that the plan copies (conv1, conv2, conv3); that base finished without them: train it again "
            "from its generated files")


def test_grid_run_fails_a_net_whose_base_lacks_a_layer_it_copies(tmp_path: Path) -> None:
    plan = _plan(tmp_path, edit_base=True)
    lines: list[str] = []
    states = GridRunner(plan, only=[NET], train_command=FAKE_TRAIN, report=lines.append, poll_s=0.02).run()
    assert states == {BASE: "done", NET: "failed"}
    assert netstate.read_status(plan.net(NET).dir)["error"] == _reason(plan)
    assert f"[1/2 done] {NET}: failed: {_reason(plan)}" in lines
    assert invocations(plan.net(NET).dir) == []


def test_grid_submit_fails_it_at_submission_or_in_its_job(tmp_path: Path) -> None:
    plan = _plan(tmp_path, edit_base=True)
    GridRunner(plan, only=[BASE], train_command=FAKE_TRAIN, report=lambda line: None, poll_s=0.02).run()
    # The base has finished: the net fails at once, and no job is queued for it.
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="local")
    lines: list[str] = []
    jobs = submit_plan(plan, executor, only=[NET], device="cpu", train_command=FAKE_TRAIN, report=lines.append)
    assert jobs == {} and lines == [f"{NET}: failed: {_reason(plan)}"]
    record = netstate.read_status(plan.net(NET).dir)
    assert (record["state"], record["error"]) == ("failed", _reason(plan))
    # A job whose base finished while it waited checks the same, and its status says why it failed.
    netstate.write_status(plan.net(NET).dir, netstate.QUEUED, net=NET)
    with pytest.raises(ReplicateError, match="lack the layer"):
        TrainNet(device="cpu", train_command=FAKE_TRAIN)(plan.net(NET))
    record = netstate.read_status(plan.net(NET).dir)
    assert (record["state"], record["error"]) == ("failed", _reason(plan))
    assert invocations(plan.net(NET).dir) == []
