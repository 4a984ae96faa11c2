"""`grid status`: states, iterations and accuracies read back from the net folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from grid_support import FAKE_TRAIN, make_plan

from replicate.cli import main
from replicate.experiments import netstate
from replicate.experiments.planfile import read_plan
from replicate.experiments.runner import GridRunner
from replicate.experiments.status import collect, format_table


def _metrics(net_dir: Path, records: list[dict], tail: str = "") -> None:
    (net_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _test(it: int, acc: float) -> dict:
    return {"iter": it, "kind": "test", "net": 0, "outputs": {"accuracy": acc, "loss": 2.0}}


def test_every_state_with_iterations_and_accuracies(tmp_path: Path) -> None:
    names = ["done", "run", "gone", "queued", "wait", "failed", "child", "grandchild", "half", "early"]
    bases = {"child": "failed", "grandchild": "child"}
    plan = read_plan(make_plan(tmp_path, [(n, bases.get(n)) for n in names], max_iter=100))
    _metrics(tmp_path / "done", [_test(50, 0.4), _test(100, 0.6), {"kind": "done", "iter": 100}])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        netstate.write_status(tmp_path / "run", "running", pid=sleeper.pid, gpu="1")
        _metrics(tmp_path / "run", [_test(10, 0.2), _test(20, 0.5), _test(30, 0.3),
                                    {"iter": 40, "kind": "train", "lr": 0.01, "loss": 3.0}],
                 tail='{"iter": 41, "kin')  # a record being written right now
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        netstate.write_status(tmp_path / "gone", "running", pid=int(dead.stdout))
        netstate.write_status(tmp_path / "queued", "queued", job_id="123_4")
        netstate.write_status(tmp_path / "failed", "failed", error="RuntimeError: boom")
        (tmp_path / "half" / "snap" / "half_iter_20.solverstate").write_text("")
        _metrics(tmp_path / "early", [{"iter": 5, "kind": "train", "lr": 0.01, "loss": 3.0}])
        reports = {r.name: r for r in collect(plan)}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [r for r in reports] == names
    states = {name: r.state for name, r in reports.items()}
    assert states == {"done": "done", "run": "running", "gone": "stopped", "queued": "queued", "wait": "waiting",
                      "failed": "failed", "child": "blocked", "grandchild": "blocked", "half": "stopped",
                      "early": "stopped"}
    assert (reports["done"].iter, reports["done"].accuracy, reports["done"].best) == (100, 0.6, 0.6)
    assert (reports["run"].iter, reports["run"].accuracy, reports["run"].best) == (40, 0.3, 0.5)
    assert reports["run"].note == "GPU 1"
    assert reports["gone"].note == f"trainer process {int(dead.stdout)} is gone"
    assert reports["queued"].note == "job 123_4"
    assert reports["failed"].note == "RuntimeError: boom"
    assert reports["child"].note == "base net 'failed' failed"
    assert reports["grandchild"].note == "base net 'child' blocked"
    assert reports["half"].note == "resumes from half_iter_20.solverstate"
    assert reports["early"].note == "no snapshot: restarts fresh" and reports["early"].iter == 5
    assert (reports["wait"].iter, reports["wait"].accuracy) == (None, None)
    table = format_table(list(reports.values())).splitlines()
    assert table[0].split() == ["NET", "STATE", "ITER", "ACCURACY", "BEST", "NOTE"]
    assert table[2].split() == ["run", "running", "40/100", "0.3000", "0.5000", "GPU", "1"]
    assert table[5].split() == ["wait", "waiting", "-/100", "-", "-"]
    assert table[-1] == "10 nets: 1 done, 1 running, 1 queued, 1 waiting, 3 stopped, 2 blocked, 1 failed"


def test_status_command_after_a_run_table_and_json(tmp_path: Path, capsys) -> None:
    plan_path = make_plan(tmp_path, [("b", None), ("t", "b"), ("bad", None)], fake={"bad": {"fail_at": 2}})
    GridRunner(read_plan(plan_path), train_command=FAKE_TRAIN, report=lambda line: None, poll_s=0.02).run()
    assert main(["grid", "status", "--plan", str(plan_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:5] for line in out[1:4]] == [
        ["b", "done", "6/6", "0.5000", "0.5000"],
        ["t", "done", "6/6", "0.5000", "0.5000"],
        ["bad", "failed", "2/6", "0.1667", "0.1667"],
    ]
    note = f"RuntimeError: fake failure at iteration 2 (trainer output: {tmp_path / 'bad' / 'train.out'})"
    assert out[3].endswith(note)
    assert out[-1] == "3 nets: 2 done, 1 failed"
    assert main(["grid", "status", "--plan", str(plan_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["metric"], data["best_is"]) == ("accuracy", "max")
    assert data["totals"] == {"done": 2, "running": 0, "queued": 0, "waiting": 0, "stopped": 0,
                              "blocked": 0, "failed": 1}
    assert data["nets"][2] == {"name": "bad", "state": "failed", "iter": 2, "max_iter": 6,
                               "accuracy": 2 / 12, "best": 2 / 12,
                               "note": note}


def test_a_broken_metrics_line_is_named_in_its_nets_row_and_hides_no_other_net(tmp_path: Path, capsys) -> None:
    plan_path = make_plan(tmp_path, [("a", None), ("b", None)])
    (tmp_path / "a" / "metrics.jsonl").write_text('{"iter": 1}\n{"iter": 2, "kind": "test", "outp\n{"iter": 3}\n')
    _metrics(tmp_path / "b", [_test(4, 0.25)])
    assert main(["grid", "status", "--plan", str(plan_path)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["a"].split()[1:3] == ["stopped", "3/6"]
    assert rows["a"].endswith(f"no snapshot: restarts fresh; {tmp_path}/a/metrics.jsonl:2: not a JSON record "
                              "(Unterminated string starting at)")
    assert rows["b"].split()[1:5] == ["stopped", "4/6", "0.2500", "0.2500"]


def test_a_loss_is_best_at_its_minimum_and_its_column_is_named(tmp_path: Path, capsys) -> None:
    plan_path = make_plan(tmp_path, [("a", None), ("b", None)])
    _metrics(tmp_path / "a", [{"iter": it, "kind": "test", "net": 0, "outputs": {"accuracy": acc, "loss": loss}}
                              for it, acc, loss in ((0, 0.0, 1.4678), (2, 0.5, 0.7), (4, 0.4, 0.9))])
    assert main(["grid", "status", "--plan", str(plan_path), "--metric", "loss"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NET", "STATE", "ITER", "LOSS", "BEST(MIN)", "NOTE"]
    assert lines[1].split()[:5] == ["a", "stopped", "4/6", "0.9000", "0.7000"]
    assert main(["grid", "status", "--plan", str(plan_path), "--metric", "loss", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["metric"], data["best_is"], data["nets"][0]["best"]) == ("loss", "min", 0.7)
    assert main(["grid", "status", "--plan", str(plan_path)]) == 0  # accuracy: the highest
    assert capsys.readouterr().out.splitlines()[1].split()[3:5] == ["0.4000", "0.5000"]


def test_an_unknown_metric_is_an_error_naming_the_outputs_unless_nothing_has_tested(tmp_path: Path,
                                                                                   capsys) -> None:
    plan_path = make_plan(tmp_path, [("a", None), ("b", None)])
    _metrics(tmp_path / "a", [{"iter": 5, "kind": "train", "lr": 0.01, "loss": 3.0}])
    assert main(["grid", "status", "--plan", str(plan_path), "--metric", "nope"]) == 0  # no test yet: the table
    assert capsys.readouterr().out.splitlines()[0].split()[3] == "NOPE"
    _metrics(tmp_path / "b", [_test(4, 0.25)])
    assert main(["grid", "status", "--plan", str(plan_path), "--metric", "nope"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --metric 'nope': no net's tests output it (test net #0 in metrics.jsonl); "
                   "the outputs found: accuracy, loss\n")


def test_a_net_whose_slurm_job_left_the_queue_unfinished_shows_as_stopped(tmp_path: Path, capsys,
                                                                          monkeypatch) -> None:
    """A job SLURM killed (out of memory, a node lost), or whose requeues ran out, records nothing:
    its net said queued or running for ever.  Where squeue answers, grid status asks it."""
    plan_path = make_plan(tmp_path, [("a", None), ("b", None), ("c", None), ("local", None)])
    netstate.write_status(tmp_path / "a", "queued", job_id="7_0")
    netstate.write_status(tmp_path / "b", "running", job_id="7_1", host="elsewhere", pid=1)
    netstate.write_status(tmp_path / "c", "queued", job_id="8", note="requeued after the time limit or preemption")
    plan = read_plan(plan_path)
    states = {r.name: (r.state, r.note) for r in collect(plan, queued={"7_0": ""})}
    gone = "left SLURM's queue unfinished (its requeues ran out, or SLURM killed or cancelled it): `grid submit` queues it again"
    assert states == {"a": ("queued", "job 7_0"), "b": ("stopped", f"job 7_1 {gone}"),
                      "c": ("stopped", f"job 8 {gone}"), "local": ("waiting", "")}
    assert {r.name: r.state for r in collect(plan)}["c"] == "queued"  # no queue to ask: as recorded
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\necho 7_0\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert main(["grid", "status", "--plan", str(plan_path)]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert rows == {"a": "queued", "b": "stopped", "c": "stopped", "local": "waiting"}
