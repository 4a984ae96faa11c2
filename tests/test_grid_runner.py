"""The local grid runner, driven through the train contract by tests/grid_fake_train.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from grid_support import FAKE_TRAIN, invocations, make_plan

from replicate.errors import ReplicateError
from replicate.experiments import netstate
from replicate.experiments.launch import error_line
from replicate.experiments.planfile import read_plan
from replicate.experiments.runner import RESTARTS, GridRunner

ROOT = Path(__file__).resolve().parent.parent


def _run(plan_path: Path, **kwargs) -> tuple[dict[str, str], list[str]]:
    lines: list[str] = []
    kwargs.setdefault("train_command", FAKE_TRAIN)
    runner = GridRunner(read_plan(plan_path), report=lines.append, poll_s=0.02, **kwargs)
    return runner.run(), lines


def test_dependants_start_from_their_base_final_weights_after_it(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, [("t1", "b"), ("b", None), ("solo", None), ("t2", "t1")])
    states, lines = _run(plan)
    assert states == {"b": "done", "t1": "done", "solo": "done", "t2": "done"}
    runs = {name: invocations(tmp_path / name) for name in states}
    assert all(len(r) == 1 for r in runs.values())
    assert runs["b"][0]["end"] <= runs["t1"][0]["start"]
    assert runs["t1"][0]["end"] <= runs["t2"][0]["start"]
    assert runs["t1"][0]["argv"] == [str(tmp_path / "t1" / "solver.prototxt"), "--weights",
                                     str(tmp_path / "b" / "snap" / "b_iter_6.caffemodel")]
    assert runs["solo"][0]["argv"] == [str(tmp_path / "solo" / "solver.prototxt")]
    assert all(run["cwd"] == str(tmp_path / name) for name, r in runs.items() for run in r)
    assert lines[0] == "[0/4 done] 4 nets to train"
    assert lines[1] == "[0/4 done] b: started, fresh"  # the base first: others wait for it
    record = netstate.read_status(tmp_path / "t2")
    assert record["state"] == "done" and record["returncode"] == 0 and record["pid"] is None


def test_one_net_per_gpu_each_sees_only_its_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # the machine's own numbering
    plan = make_plan(tmp_path, [(n, None) for n in "abcd"], fake={n: {"step_s": 0.2} for n in "abcd"})
    states, lines = _run(plan, gpus=["2", "5"], progress_s=0.0)
    assert set(states.values()) == {"done"}
    progress = (r"\[[0-3]/4 done\] (\d+)/24 iterations, [\d.]+ it/s so far, ETA (\d\d:\d\d:\d\d|\?); "
                r"running: [abcd] (\d/6|starting), [abcd] (\d/6|starting)")
    assert any(re.fullmatch(progress, line) for line in lines), lines
    runs = [run for n in "abcd" for run in invocations(tmp_path / n)]
    assert sorted(run["gpu"] for run in runs) == ["2", "2", "5", "5"]
    assert all(run["argv"][-2:] == ["--device", "cuda"] for run in runs)
    spans = sorted((run["start"], run["end"]) for run in runs)
    assert spans[1][0] < spans[0][1]  # two ran at once
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 2  # never three


def test_gpu_ids_number_the_gpus_this_process_sees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a mask (a SLURM allocation or a shared node's CUDA_VISIBLE_DEVICES=6,7), --gpus 0
    is the mask's first GPU: handing a trainer the machine's GPU 0 put it on someone else's."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    plan = make_plan(tmp_path, [("a", None), ("b", None)])
    assert set(_run(plan, gpus=["1", "0"])[0].values()) == {"done"}
    assert sorted(run["gpu"] for n in "ab" for run in invocations(tmp_path / n)) == ["6", "7"]
    with pytest.raises(ReplicateError, match=r"--gpus 2: this process sees GPUs 0 to 1 \(CUDA_VISIBLE_DEVICES=6,7\)"):
        _run(plan, gpus=["0", "2"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ReplicateError, match="--gpus 0: this process sees no GPU"):
        _run(plan, gpus=["0"])


def test_progress_counts_nets_and_iterations_with_the_rate_so_far_and_an_eta(tmp_path: Path) -> None:
    # One net finished before this run (it counts as done, not in the rate), one runs 6
    # iterations; every progress line says how much is done, how fast, and how long is left.
    plan = make_plan(tmp_path, [("old", None), ("new", None)], fake={"new": {"step_s": 0.15}})
    (tmp_path / "old" / "metrics.jsonl").write_text('{"kind": "done", "iter": 6}\n')
    states, lines = _run(plan, progress_s=0.0)
    assert states == {"old": "done", "new": "done"}
    found = [re.fullmatch(r"\[1/2 done\] (\d+)/12 iterations, ([\d.]+) it/s so far, ETA (\S+); running: new (starting|(\d)/6)",
                          line) for line in lines if "running:" in line]
    assert found and all(found), lines
    assert found[0].group(4) == "starting" and found[0].group(1) == "6"  # never a bare "iter -/6"
    late = [m for m in found if m.group(5) and 2 <= int(m.group(5)) < 6]
    assert late, lines
    m = late[-1]
    done, rate, eta = int(m.group(1)), float(m.group(2)), m.group(3)
    assert done == 6 + int(m.group(5)) and rate > 0
    hours, minutes, seconds = map(int, eta.split(":"))
    assert hours == 0 and minutes == 0 and abs(seconds - (12 - done) / rate) <= 1


def test_a_repeated_gpu_id_runs_two_nets_on_that_gpu(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, [(n, None) for n in "abc"], fake={n: {"step_s": 0.2} for n in "abc"})
    states, _ = _run(plan, gpus=["3", "3"])
    assert set(states.values()) == {"done"}
    runs = [run for n in "abc" for run in invocations(tmp_path / n)]
    assert {run["gpu"] for run in runs} == {"3"}
    spans = sorted((run["start"], run["end"]) for run in runs)
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 2


def test_cpu_jobs_run_that_many_nets_at_once_without_gpus(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, [(n, None) for n in "abcd"], fake={n: {"step_s": 0.2} for n in "abcd"})
    states, _ = _run(plan, jobs=2, device="cpu")
    assert set(states.values()) == {"done"}
    runs = [run for n in "abcd" for run in invocations(tmp_path / n)]
    assert {run["gpu"] for run in runs} == {None}
    spans = sorted((run["start"], run["end"]) for run in runs)
    assert spans[1][0] < spans[0][1]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 2
    with pytest.raises(ReplicateError, match="--jobs"):
        GridRunner(read_plan(plan), jobs=2, gpus=["0"])


def test_resume_skips_finished_resumes_stopped_starts_fresh(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, [("fin", None), ("fin2", None), ("half", None), ("new", None)], max_iter=6)
    (tmp_path / "fin" / "metrics.jsonl").write_text('{"kind": "done", "iter": 6}\n')
    for ext in ("caffemodel", "solverstate"):  # killed during its final test: not done, resumes for it
        (tmp_path / "fin2" / "snap" / f"fin2_iter_6.{ext}").write_text("")
    for it in (2, 4):
        for ext in ("caffemodel", "solverstate"):
            (tmp_path / "half" / "snap" / f"half_iter_{it}.{ext}").write_text("")
    states, lines = _run(plan, device="cpu")
    assert set(states.values()) == {"done"}
    assert invocations(tmp_path / "fin") == []
    [fin2] = invocations(tmp_path / "fin2")
    assert fin2["argv"][1:] == ["--snapshot", str(tmp_path / "fin2" / "snap" / "fin2_iter_6.solverstate"), "--device", "cpu"]
    assert netstate.read_status(tmp_path / "fin")["state"] == "done"
    [half] = invocations(tmp_path / "half")
    snapshot = str(tmp_path / "half" / "snap" / "half_iter_4.solverstate")
    assert half["argv"][1:] == ["--snapshot", snapshot, "--device", "cpu"]
    assert netstate.read_status(tmp_path / "half")["resumed_from"] == snapshot
    assert f"[0/4 done] half: started, resuming from {snapshot}".replace("0/4", "2/4") in lines
    [new] = invocations(tmp_path / "new")
    assert new["argv"][1:] == ["--device", "cpu"]
    metrics = [json.loads(line) for line in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in metrics if m["kind"] == "train"] == [5, 6]


def test_a_resumed_transfer_net_takes_its_snapshot_not_the_base_weights(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, [("b", None), ("t", "b")])
    (tmp_path / "b" / "metrics.jsonl").write_text('{"kind": "done", "iter": 6}\n')
    (tmp_path / "t" / "snap" / "t_iter_2.solverstate").write_text("")
    states, _ = _run(plan)
    assert states == {"b": "done", "t": "done"}
    [run] = invocations(tmp_path / "t")
    assert run["argv"][1:] == ["--snapshot", str(tmp_path / "t" / "snap" / "t_iter_2.solverstate")]


def test_failed_base_blocks_its_dependants_with_the_reason(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, [("b", None), ("t1", "b"), ("t2", "t1"), ("other", None)],
                     fake={"b": {"fail_at": 3}})
    states, lines = _run(plan)
    assert states == {"b": "failed", "t1": "blocked", "t2": "blocked", "other": "done"}
    record = netstate.read_status(tmp_path / "b")
    error = f"RuntimeError: fake failure at iteration 3 (trainer output: {tmp_path / 'b' / 'train.out'})"
    assert record["returncode"] == 1 and record["error"] == error
    reason = f"base net 'b' failed: {error}"
    assert netstate.read_status(tmp_path / "t1")["error"] == reason
    assert netstate.read_status(tmp_path / "t2")["error"] == reason  # blocked through t1
    assert invocations(tmp_path / "t1") == [] and invocations(tmp_path / "t2") == []
    assert f"[0/4 done] t1: blocked: {reason}" in lines
    # Running again retries the failed net (from its newest snapshot), then its dependants.
    (tmp_path / "b" / "fake.json").unlink()
    states, _ = _run(plan)
    assert set(states.values()) == {"done"}
    assert invocations(tmp_path / "b")[1]["argv"][1:] == [
        "--snapshot", str(tmp_path / "b" / "snap" / "b_iter_2.solverstate")]


def test_a_net_that_died_before_its_first_snapshot_starts_again_over_its_logs(tmp_path: Path) -> None:
    # `train` refuses a fresh start over an earlier run's logs unless given --force (the fake
    # trainer keeps that contract); the grid, which decided from disk to start over, gives it.
    plan = make_plan(tmp_path, [("b", None), ("t", "b")], fake={"b": {"fail_at": 1}})
    states, _ = _run(plan)
    assert states == {"b": "failed", "t": "blocked"}
    assert (tmp_path / "b" / "train.log").is_file() and not list((tmp_path / "b" / "snap").iterdir())
    (tmp_path / "b" / "fake.json").unlink()
    states, _ = _run(plan)
    assert states == {"b": "done", "t": "done"}
    assert invocations(tmp_path / "b")[1]["argv"][1:] == ["--force"]
    assert invocations(tmp_path / "t")[0]["argv"][1:] == ["--weights", str(tmp_path / "b" / "snap" / "b_iter_6.caffemodel")]


def test_missing_base_weights_fail_the_dependant_only(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, [("b", None), ("t", "b")])
    (tmp_path / "b" / "metrics.jsonl").write_text('{"kind": "done", "iter": 6}\n')
    states, _ = _run(plan)
    assert states == {"b": "done", "t": "failed"}
    error = netstate.read_status(tmp_path / "t")["error"]
    assert error == (f"net 't': starting weights {tmp_path}/b/snap/b_iter_6.caffemodel not found "
                     "(the final snapshot of base net 'b')")


def test_trainer_exiting_zero_early_is_a_failure(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, [("a", None)])
    states, _ = _run(plan, train_command=[sys.executable, "-c", "pass"])
    assert states == {"a": "failed"}
    assert "exited with code 0 before max_iter" in netstate.read_status(tmp_path / "a")["error"]


def test_only_runs_the_named_nets_and_their_bases(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, [("b", None), ("t", "b"), ("u", "b"), ("x", None)])
    states, _ = _run(plan, only=["t"])
    assert states == {"b": "done", "t": "done"}
    assert invocations(tmp_path / "u") == [] and invocations(tmp_path / "x") == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_ctrl_c_stops_trainers_cleanly_and_a_rerun_resumes(tmp_path: Path, signum: int) -> None:
    """Ctrl-C, or a closed terminal (SIGHUP: the runner died of it and left its trainers
    training unsupervised, no further net started)."""
    plan = make_plan(tmp_path, [("a", None), ("b", None)], max_iter=400, snapshot=5,
                     fake={"a": {"step_s": 0.02}, "b": {"step_s": 0.02}})
    command = [sys.executable, "-m", "replicate", "grid", "run", "--plan", str(plan), "--gpus", "0,1",
               "--train-command", " ".join(FAKE_TRAIN), "--progress-every", "0.2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A suite started under nohup hands its children an ignored SIGHUP, which grid run keeps (as
    # it must): the runner here starts with SIGHUP's default, as from a terminal.
    grid = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not all((tmp_path / n / "snap" / f"{n}_iter_10.solverstate").exists() for n in "ab"):
        assert time.monotonic() < deadline and grid.poll() is None
        time.sleep(0.05)
    pids = [netstate.read_status(tmp_path / n)["pid"] for n in "ab"]
    grid.send_signal(signum)
    out, _ = grid.communicate(timeout=60)
    assert grid.returncode == 130, out
    assert "stopping 2 trainer(s)" in out and "a: stopped" in out
    for name, pid in zip("ab", pids):
        record = netstate.read_status(tmp_path / name)
        assert record["state"] == "stopped" and record["returncode"] == 0 and record["pid"] is None
        try:
            os.kill(pid, 0)
            raise AssertionError(f"trainer {pid} still running")
        except ProcessLookupError:
            pass
        # The trainer snapshotted where it stopped; the rerun continues from exactly there.
        metrics = (tmp_path / name / "metrics.jsonl").read_text()
        stopped_at = max(json.loads(line)["iter"] for line in metrics.splitlines())
        assert (tmp_path / name / "snap" / f"{name}_iter_{stopped_at}.solverstate").exists(), (
            sorted(p.name for p in (tmp_path / name / "snap").iterdir()), metrics.splitlines()[-3:],
            (tmp_path / name / "train.out").read_text(), out)
    if signum == signal.SIGHUP:
        return  # the rerun is the same as after Ctrl-C
    for name in "ab":
        (tmp_path / name / "fake.json").unlink()
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for name in "ab":
        first, second = invocations(tmp_path / name)
        assert second["argv"][1] == "--snapshot"
        train = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        iters = [r["iter"] for r in train if r.get("kind") == "train"]
        assert iters == list(range(1, 401))  # no iteration lost or repeated


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_ctrl_c_while_a_trainer_starts_stops_that_trainer_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trainer runs in its own session (the terminal's Ctrl-C does not reach it): one started just
    before a Ctrl-C must still be stopped by the runner, not left training unsupervised.  Two
    moments: right after `launch` returned (the runner's report line), and inside `launch`
    (writing the net's status)."""
    plan_path = make_plan(tmp_path, [("a", None)], max_iter=400, fake={"a": {"step_s": 0.02}})
    pids: list[int] = []
    interrupt_in_launch = False
    write_status = netstate.write_status

    def watched(folder: Path, state: str, **fields) -> dict:
        if state == netstate.RUNNING and fields.get("pid"):
            pids.append(fields["pid"])
            if interrupt_in_launch:
                raise KeyboardInterrupt
        return write_status(folder, state, **fields)

    def interrupted(line: str) -> None:
        if "started" in line:
            raise KeyboardInterrupt

    monkeypatch.setattr(netstate, "write_status", watched)
    for report in (interrupted, lambda line: None):
        runner = GridRunner(read_plan(plan_path), report=report, poll_s=0.02, train_command=FAKE_TRAIN)
        with pytest.raises(KeyboardInterrupt):
            runner.run()
        assert _gone(pids[-1])
        interrupt_in_launch = True
    assert len(pids) == 2
    assert netstate.read_status(tmp_path / "a")["pid"] is None  # the first: recorded as stopped


def test_one_runner_per_plan_and_gpus_mean_cuda(tmp_path: Path) -> None:
    plan_path = make_plan(tmp_path, [("a", None)])
    with pytest.raises(ReplicateError, match="--gpus runs every net on a GPU, but --device is 'cpu'"):
        GridRunner(read_plan(plan_path), gpus=["0"], device="cpu")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(30)"), str(tmp_path / ".grid-run.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(ReplicateError, match="another `grid run` is running this plan"):
            _run(plan_path)
    finally:
        holder.kill()
        holder.wait()
    assert _run(plan_path)[0] == {"a": "done"}


def test_a_net_still_trained_by_an_orphaned_trainer_is_not_started_twice(tmp_path: Path) -> None:
    plan_path = make_plan(tmp_path, [("a", None), ("b", None)])
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        netstate.write_status(tmp_path / "b", "running", pid=orphan.pid)
        with pytest.raises(ReplicateError, match=rf"still being trained by an earlier run: b \(pid {orphan.pid}\)"):
            _run(plan_path)
    finally:
        orphan.kill()
        orphan.wait()
    assert invocations(tmp_path / "a") == []
    assert _run(plan_path)[0] == {"a": "done", "b": "done"}  # its process gone: resumed


def test_a_net_stopped_by_a_signal_from_outside_resumes_and_its_dependants_follow(tmp_path: Path) -> None:
    """A trainer that exits 75 on a SIGTERM this run did not send (a stray kill) goes back in line
    and resumes from its snapshot; one that keeps stopping is left stopped after RESTARTS
    restarts, its dependant waiting, and the run ends with both said (it once ended in a KeyError
    with the dependant never started)."""
    plan = make_plan(tmp_path, [("b", None), ("t", "b")])
    (tmp_path / "b" / "fake.json").write_text(json.dumps({"sigterm_after": 2, "sigterm_runs": 1}))
    states, lines = _run(plan)
    assert states == {"b": "done", "t": "done"}
    runs = invocations(tmp_path / "b")
    assert [r["argv"][1:] for r in runs if "argv" in r] == [[], ["--snapshot", str(tmp_path / "b" / "snap" / "b_iter_2.solverstate")]]
    assert "[0/2 done] b: stopped by a signal this run did not send; it resumes from its snapshot (1 of 3 restarts)" in lines

    plan = make_plan(tmp_path / "again", [("b", None), ("t", "b")], max_iter=100)
    (tmp_path / "again" / "b" / "fake.json").write_text(json.dumps({"sigterm_after": 1}))
    states, lines = _run(plan)
    assert states == {"b": "stopped", "t": "waiting"}
    assert len([r for r in invocations(tmp_path / "again" / "b") if "argv" in r]) == 1 + RESTARTS
    assert lines[-1] == "[0/2 done] b: stopped"


def test_a_killed_trainer_is_reported_by_its_signal(tmp_path: Path) -> None:
    plan_path = make_plan(tmp_path, [("a", None)])
    suicide = [sys.executable, "-c", "import os, signal; print('Iteration 3, loss = 1'); os.kill(os.getpid(), signal.SIGKILL)"]
    assert _run(plan_path, train_command=suicide)[0] == {"a": "failed"}
    record = netstate.read_status(tmp_path / "a")
    assert (record["returncode"], record["error"]) == (-9, f"trainer killed by SIGKILL (trainer output: {tmp_path / 'a' / 'train.out'})")


def test_the_error_shown_is_the_last_attempts_error_line_never_its_cpu_time(tmp_path: Path) -> None:
    out = tmp_path / "train.out"
    out.write_text("==== 1 train s.prototxt\nerror: an older attempt's error\n"
                   "==== 2 train s.prototxt --force\nI0101 00:00:00.000000 1 solver.py:0] Creating training net\n"
                   "error: layer 'data' (Data): x: data source does not exist\n"
                   "trainer process CPU time: 0.04 s\n")
    assert error_line(tmp_path) == "layer 'data' (Data): x: data source does not exist"
    with open(out, "a") as f:  # an exception the CLI does not catch: its traceback's last line
        f.write("==== 3 train s.prototxt\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                "RuntimeError: boom\ntrainer process CPU time: 1.00 s\n")
    assert error_line(tmp_path) == "RuntimeError: boom"
    with open(out, "a") as f:
        f.write("==== 4 train s.prototxt\ntrainer process CPU time: 0.01 s\n")
    assert error_line(tmp_path) is None  # the conclusion then says the exit code
