"""Submission through submitit: its local executor runs the jobs for real (dependencies,
failures, requeue at the time limit); for SLURM, the sbatch scripts submitit would hand to
`sbatch` are checked here, with stand-ins for `sbatch`/`squeue`/`srun` (the real cluster runs
in tests/test_grid_slurm_cluster.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import submitit
from grid_support import FAKE_TRAIN, invocations, make_plan

from replicate.errors import ReplicateError
from replicate.experiments import netstate, slurm
from replicate.experiments.planfile import read_plan
from replicate.experiments.slurm import TrainNet, make_executor, submit_plan


def _local(tmp_path: Path) -> submitit.AutoExecutor:
    """submitit's local executor, one folder per job like make_executor's."""
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="local")
    executor.update_parameters(timeout_min=1)
    return executor


def _results(jobs: dict) -> dict[str, object]:
    out = {}
    for name, job in jobs.items():
        try:
            out[name] = job.result()
        except Exception as err:  # a failed job hands back the trainer's error
            out[name] = f"error: {str(err).strip().splitlines()[0]}"
    return out


def test_local_jobs_run_dependants_after_their_base_and_block_on_failure(tmp_path: Path) -> None:
    plan = read_plan(make_plan(tmp_path, [("t", "b"), ("b", None), ("bad", None), ("tbad", "bad"), ("ttbad", "tbad")],
                               fake={"bad": {"fail_at": 1}}))
    lines: list[str] = []
    jobs = submit_plan(plan, _local(tmp_path), device="cpu", train_command=FAKE_TRAIN, report=lines.append)
    assert set(jobs) == {"b", "bad", "t"}
    assert _results(jobs) == {"b": "done", "t": "done", "bad": "error: Job (task=0) failed during processing with trace:"}
    [b], [t] = invocations(tmp_path / "b"), invocations(tmp_path / "t")
    assert b["end"] <= t["start"]
    assert t["argv"][1:] == ["--weights", str(tmp_path / "b" / "snap" / "b_iter_6.caffemodel"), "--device", "cpu"]
    for name in ("b", "t"):
        record = netstate.read_status(tmp_path / name)
        assert record["state"] == "done" and record["job_id"] == jobs[name].job_id
        assert (tmp_path / "submitit" / jobs[name].job_id).is_dir()  # one folder per job
    reason = f"base net 'bad' failed: RuntimeError: fake failure at iteration 1 (trainer output: {tmp_path / 'bad' / 'train.out'})"
    tbad = netstate.read_status(tmp_path / "tbad")
    assert (tbad["state"], tbad["error"]) == ("blocked", reason)
    assert netstate.read_status(tmp_path / "ttbad")["error"] == reason
    assert f"tbad: blocked: {reason}" in lines and f"ttbad: blocked: {reason}" in lines
    assert invocations(tmp_path / "tbad") == []


def test_job_requeued_at_time_limit_resumes_from_newest_snapshot(tmp_path: Path) -> None:
    """The job is signalled 4 s into each attempt; checkpoint() stops the trainer (which
    snapshots where it is) and requeues the call, which continues with --snapshot."""
    plan = read_plan(make_plan(tmp_path, [("a", None)], max_iter=12, snapshot=100, fake={"a": {"step_s": 0.5}}))
    executor = submitit.LocalExecutor(tmp_path / "submitit" / "%j", max_num_timeout=8)
    executor.update_parameters(timeout_min=8 / 60, signal_delay_s=4)
    jobs = submit_plan(plan, executor, device="cpu", train_command=FAKE_TRAIN, report=lambda line: None)
    assert jobs["a"].result() == "done"
    runs = invocations(tmp_path / "a")
    assert len(runs) >= 2
    train = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    iters = [r["iter"] for r in train if r.get("kind") == "train"]
    assert iters == list(range(1, 13))  # each attempt continues where the last one stopped
    assert runs[0]["argv"][1:] == ["--device", "cpu"]
    for run in runs[1:]:
        snapshot = run["argv"][2]
        assert run["argv"][1] == "--snapshot"
        stopped_at = int(re.search(r"_iter_(\d+)\.solverstate$", snapshot).group(1))
        assert snapshot == str(tmp_path / "a" / "snap" / f"a_iter_{stopped_at}.solverstate")
        assert 0 <= stopped_at < 12
    assert "Caught signal SIGUSR2" in jobs["a"].stderr() and "Requeued job" in jobs["a"].stdout()
    assert netstate.read_status(tmp_path / "a")["state"] == "done"


def test_train_net_is_safe_to_repeat(tmp_path: Path) -> None:
    net = read_plan(make_plan(tmp_path, [("a", None)])).net("a")
    train = TrainNet(device=None, train_command=FAKE_TRAIN)
    assert train(net) == "done"
    assert train(net) == "done"  # finished: nothing is run again
    assert len(invocations(tmp_path / "a")) == 1
    other = read_plan(make_plan(tmp_path / "x", [("f", None)], fake={"f": {"fail_at": 0}})).net("f")
    with pytest.raises(Exception, match="net 'f' failed: RuntimeError: fake failure at iteration 0"):
        train(other)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`sbatch` that keeps each script it is given, queues its job (each array task) in the file
    $FAKE_SLURM_QUEUE and answers like SLURM; `squeue` that lists that queue; `scancel` that
    notes what it is asked to cancel in $FAKE_SLURM_QUEUE.cancelled and takes it out of the queue
    (unless $FAKE_SLURM_SLOW_CANCEL: the test does, as a job ends); an `srun`; `sinfo` that
    gives the partition's MaxTime as $FAKE_SLURM_MAXTIME (default infinite); `sacctmgr` that gives
    a QOS's MaxWall as $FAKE_SLURM_QOS_MAXWALL (unset: fails as without an accounting database)."""
    scripts = tmp_path / "sbatch"
    scripts.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\nn=$(( $(ls "$FAKE_SBATCH_DIR" | wc -l) + 1000 ))\n'
        'cp "$1" "$FAKE_SBATCH_DIR/$n.sh"\n'
        'last=$(sed -n "s/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p" "$1")\n'
        'if [ -n "$last" ]; then for i in $(seq 0 "$last"); do echo "${n}_$i"; done; else echo "$n"; fi >>"$FAKE_SLURM_QUEUE"\n'
        'echo "Submitted batch job $n"\n'
    )
    (bin_dir / "squeue").write_text(  # id|state|reason, each job pending for $FAKE_SLURM_REASON (default none)
        '#!/bin/sh\n[ -f "$FAKE_SLURM_QUEUE" ] || exit 0\n'
        'awk -v r="${FAKE_SLURM_REASON:-None}" \'{print $0 "|PENDING|" r}\' "$FAKE_SLURM_QUEUE"\n')
    (bin_dir / "scancel").write_text(  # the job leaves the queue at once, unless $FAKE_SLURM_SLOW_CANCEL
        '#!/bin/sh\nfor j in "$@"; do echo "$j" >>"$FAKE_SLURM_QUEUE.cancelled"; done\n'
        '[ -n "$FAKE_SLURM_SLOW_CANCEL" ] && exit 0\n'
        'for j in "$@"; do grep -vx "$j" "$FAKE_SLURM_QUEUE" >"$FAKE_SLURM_QUEUE.new"; mv "$FAKE_SLURM_QUEUE.new" "$FAKE_SLURM_QUEUE"; done\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sinfo").write_text('#!/bin/sh\necho "${FAKE_SLURM_MAXTIME:-infinite}"\n')  # the partition's MaxTime
    (bin_dir / "sacctmgr").write_text(  # a QOS's MaxWall; unset: a site without accounting, as sacctmgr says
        '#!/bin/sh\n[ -n "$FAKE_SLURM_QOS_MAXWALL" ] || { echo "You are not running a supported accounting_storage '
        'plugin" >&2; exit 1; }\necho "$FAKE_SLURM_QOS_MAXWALL $*" >"$FAKE_SBATCH_DIR/../sacctmgr.args"\n'
        'echo "$FAKE_SLURM_QOS_MAXWALL"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_DIR", str(scripts))
    monkeypatch.setenv("FAKE_SLURM_QUEUE", str(tmp_path / "queue"))
    return scripts


def _leave_queue(tmp_path: Path, job_id: str) -> None:
    """The job ends (or is cancelled): it leaves SLURM's queue."""
    queue = tmp_path / "queue"
    queue.write_text("".join(f"{j}\n" for j in queue.read_text().split() if j != job_id))


def _flags(script: Path) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script.read_text(), re.M))


def test_slurm_arrays_with_afterok_on_the_base_job(tmp_path: Path, fake_slurm: Path, monkeypatch) -> None:
    plan = read_plan(make_plan(tmp_path, [("t1", "b"), ("b", None), ("c", None), ("t2", "b"), ("t3", "t1"), ("d", None)]))
    (tmp_path / "d" / "metrics.jsonl").write_text('{"kind": "done", "iter": 6}\n')  # finished: not submitted
    executor = make_executor(plan, partition="gpu", time_min=4320, gpus_per_net=1, array_parallelism=2,
                             cpus_per_task=8)
    lines: list[str] = []
    jobs = submit_plan(plan, executor, report=lines.append)
    assert {name: job.job_id for name, job in jobs.items()} == {
        "b": "1000_0", "c": "1000_1", "t1": "1001_0", "t2": "1001_1", "t3": "1002"}
    assert lines == ["queued 2 net(s): b, c", "queued 2 net(s) after job 1000_0: t1, t2",
                     "queued 1 net(s) after job 1001_0: t3"]
    first, second, third = (_flags(fake_slurm / f"{n}.sh") for n in (1000, 1001, 1002))
    common = {"partition": "gpu", "time": "4320", "gpus-per-node": "1", "cpus-per-task": "8", "mem": "16GB",
              "signal": "USR2@120", "nodes": "1"}
    for flags in (first, second, third):
        assert flags.items() >= common.items()
    assert first["array"] == "0-1%2" and "dependency" not in first and first["job-name"] == "grid"
    assert second["array"] == "0-1%2" and second["dependency"] == "afterok:1000_0"
    assert second["kill-on-invalid-dep"] == "yes" and second["job-name"] == "grid-after-b"
    assert "array" not in third and third["dependency"] == "afterok:1001_0"
    script = (fake_slurm / "1000.sh").read_text()
    root = Path(__file__).resolve().parent.parent
    assert f"export PYTHONPATH={root}" in script  # jobs import this very package
    assert f"-m submitit.core._submit {tmp_path}/submitit/%j" in script
    # One picklable callable per job, in the job's own folder, resuming by itself.
    submitted = submitit.helpers.DelayedSubmission.load(tmp_path / "submitit" / "1001_1" / "1001_1_submitted.pkl")
    assert isinstance(submitted.function, TrainNet) and submitted.args == (plan.net("t2"),)
    assert submitted.function.device == "cuda"
    record = netstate.read_status(tmp_path / "t3")
    assert (record["state"], record["job_id"], record["folder"]) == ("queued", "1002", str(tmp_path / "submitit" / "1002"))

    # Submitting again queues nothing twice, whatever the status says while the job is queued
    # (a requeued job's trainer records "stopped" until it runs again).
    lines.clear()
    netstate.write_status(tmp_path / "c", "stopped", job_id="1000_1", requeue=True)
    again = submit_plan(plan, executor, report=lines.append)
    assert again == {"b": "1000_0", "c": "1000_1", "t1": "1001_0", "t2": "1001_1", "t3": "1002"}
    assert len(list(fake_slurm.iterdir())) == 3
    assert lines[0] == "b: already queued as job 1000_0"
    # One that SLURM will never start as submitted (a default QOS's MaxWall, unknown when it was
    # submitted) is kept, and said so with what to do.
    lines.clear()
    monkeypatch.setenv("FAKE_SLURM_REASON", "QOSMaxWallDurationPerJobLimit")
    submit_plan(plan, executor, report=lines.append)
    assert lines[0] == ("b: already queued as job 1000_0, pending (QOSMaxWallDurationPerJobLimit): SLURM will never "
                        "start this job as submitted; `grid submit --resubmit` with a shorter --time (a net that "
                        "reaches its limit snapshots, requeues and resumes) queues it anew")
    monkeypatch.delenv("FAKE_SLURM_REASON")
    # A job gone from the queue (scancel) is submitted again, whatever its status says; so are
    # the nets waiting for it (afterok could never be met): their jobs are cancelled and
    # replaced by jobs after the new one.
    _leave_queue(tmp_path, "1000_0")
    lines.clear()
    submit_plan(plan, executor, report=lines.append)
    assert lines == ["c: already queued as job 1000_1", "cancelled job(s) 1001_0, 1001_1, 1002: their nets are queued anew",
                     "queued 1 net(s): b", "queued 2 net(s) after job 1003: t1, t2", "queued 1 net(s) after job 1004_0: t3"]
    assert (tmp_path / "queue.cancelled").read_text().split() == ["1001_0", "1001_1", "1002"]
    assert _flags(fake_slurm / "1003.sh").get("array") is None
    resubmitted = submit_plan(plan, executor, resubmit=True, report=lambda line: None)
    assert resubmitted["t1"].job_id == "1007_0"
    assert _flags(fake_slurm / "1007.sh")["dependency"] == "afterok:1006_0"


def test_a_replaced_job_is_waited_for_so_that_its_last_record_does_not_hide_the_new_job(
        tmp_path: Path, fake_slurm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scancel returns at once; the cancelled job's trainer snapshots, then records its net
    stopped under the old job id.  Queued before that, the replacement's id was overwritten,
    and the next `grid submit` queued the net a second time."""
    plan = read_plan(make_plan(tmp_path, [("b", None)]))
    executor = make_executor(plan, partition="p")
    assert submit_plan(plan, executor, report=lambda line: None)["b"].job_id == "1000"
    monkeypatch.setenv("FAKE_SLURM_SLOW_CANCEL", "1")
    monkeypatch.setattr(slurm, "CANCEL_POLL_S", 0.05)

    def old_job_ends() -> None:  # 0.5 s after scancel: snapshot written, status recorded, gone
        while not (tmp_path / "queue.cancelled").exists():
            time.sleep(0.01)
        time.sleep(0.5)
        netstate.write_status(tmp_path / "b", "stopped", job_id="1000", requeue=True)
        _leave_queue(tmp_path, "1000")

    ender = threading.Thread(target=old_job_ends)
    ender.start()
    lines: list[str] = []
    assert submit_plan(plan, executor, resubmit=True, stop_timeout_s=5, report=lines.append)["b"].job_id == "1001"
    ender.join()
    assert netstate.read_status(tmp_path / "b")["job_id"] == "1001"
    assert submit_plan(plan, executor, report=lines.append)["b"] == "1001"  # not queued twice
    assert lines[-1] == "b: already queued as job 1001"
    # A job that does not leave the queue: nothing new is queued, and the command says so.
    (tmp_path / "queue.cancelled").unlink()
    monkeypatch.setattr(slurm, "CANCEL_MARGIN_S", 0.0)
    with pytest.raises(ReplicateError, match=r"job\(s\) 1001 still in SLURM's queue 0 s after scancel; nothing new "
                                             "was queued"):
        submit_plan(plan, executor, resubmit=True, stop_timeout_s=0.2, report=lines.append)
    assert len(list(fake_slurm.iterdir())) == 2


def test_dependants_of_a_base_queued_earlier_wait_for_that_job(tmp_path: Path, fake_slurm: Path) -> None:
    plan = read_plan(make_plan(tmp_path, [("b", None), ("t", "b")]))
    netstate.write_status(tmp_path / "b", "running", job_id="77_3")
    (tmp_path / "queue").write_text("77_3\n")
    jobs = submit_plan(plan, make_executor(plan, partition="p"), report=lambda line: None)
    assert jobs["b"] == "77_3" and jobs["t"].job_id == "1000"
    assert _flags(fake_slurm / "1000.sh")["dependency"] == "afterok:77_3"


def test_grid_submit_command(tmp_path: Path, fake_slurm: Path, capsys) -> None:
    from replicate.cli import main
    from replicate.invocation import command

    plan_path = make_plan(tmp_path, [("b", None), ("t", "b")])
    assert main(["grid", "submit", "--plan", str(plan_path), "--slurm-partition", "gpu", "--time", "60",
                 "--gpus-per-net", "2", "--array-parallelism", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "queued 1 net(s): b; time limit 60 min", "queued 1 net(s) after job 1000: t; time limit 60 min",
        f"2 net(s) queued or in the queue; `{command('grid', 'status', '--plan', str(plan_path))}`"]
    flags = _flags(fake_slurm / "1000.sh")
    # Two GPUs for one net: twice the cores and memory, and the trainer is torchrun's 2 processes.
    assert (flags["partition"], flags["time"], flags["gpus-per-node"]) == ("gpu", "60", "2")
    assert (flags["cpus-per-task"], flags["mem"]) == ("20", "32GB")
    submitted = submitit.helpers.DelayedSubmission.load(tmp_path / "submitit" / "1000" / "1000_submitted.pkl")
    assert submitted.function.train_command[1:] == ["-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node=2", "-m", "replicate", "train"]
    assert main(["grid", "submit", "--plan", str(plan_path), "--slurm-partition", "cpu", "--gpus-per-net", "0",
                 "--only", "b", "--resubmit"]) == 0
    flags = _flags(fake_slurm / "1002.sh")
    assert "gpus-per-node" not in flags and (flags["cpus-per-task"], flags["mem"]) == ("10", "16GB")
    capsys.readouterr()
    assert _flags(fake_slurm / "1001.sh")["dependency"] == "afterok:1000"
    assert main(["grid", "status", "--plan", str(plan_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 nets: 2 queued"


def test_sbatch_refusal_and_missing_slurm_are_one_line_errors(tmp_path: Path, fake_slurm: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    plan = read_plan(make_plan(tmp_path, [("b", None), ("t", "b")]))
    executor = make_executor(plan, partition="nope")
    sbatch = Path(shutil.which("sbatch"))
    sbatch.write_text(sbatch.read_text().replace('cp "$1"', '[ -n "$(ls "$FAKE_SBATCH_DIR")" ] && '
                      '{ echo "sbatch: error: invalid partition specified: nope" >&2; exit 1; }\ncp "$1"'))
    with pytest.raises(ReplicateError, match=re.escape(
            "submitting t failed (sbatch: error: invalid partition specified: nope); "
            "1 net(s) were queued before and stay queued")):
        submit_plan(plan, executor, report=lambda line: None)
    assert netstate.read_status(tmp_path / "b")["state"] == "queued"
    assert netstate.read_status(tmp_path / "t")["state"] == "failed"
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ReplicateError, match=r"no SLURM here \(`srun` is not on PATH\)"):
        make_executor(plan, partition="gpu")


def test_site_options_reach_every_job_of_every_array(tmp_path: Path, fake_slurm: Path, capsys) -> None:
    from replicate.cli import main

    plan_path = make_plan(tmp_path, [("b", None), ("t", "b"), ("c", None)])
    assert main(["grid", "submit", "--plan", str(plan_path), "--slurm-partition", "gpu", "--time", "60",
                 "--slurm-arg", "account=acme", "--slurm-arg", "qos=high", "--slurm-arg", "constraint=h100|h200",
                 "--slurm-arg", "gres=gpu:h100:1", "--slurm-arg", "mail-type=FAIL", "--slurm-arg", "exclusive",
                 "--signal-delay", "300", "--stop-timeout", "200"]) == 0
    scripts = sorted(fake_slurm.iterdir())
    assert len(scripts) == 2  # the base array (b, c), then t after b
    for script in scripts:
        flags = _flags(script)
        assert {k: flags.get(k) for k in ("account", "qos", "constraint", "gres", "mail-type", "signal")} == {
            "account": "acme", "qos": "high", "constraint": "'h100|h200'", "gres": "gpu:h100:1", "mail-type": "FAIL",
            "signal": "USR2@300"}, script.read_text()
        assert "#SBATCH --exclusive\n" in script.read_text()
        assert "gpus-per-node" not in flags  # the typed gres is the GPU request
    assert _flags(scripts[1])["dependency"] == "afterok:1000_0"
    submitted = submitit.helpers.DelayedSubmission.load(tmp_path / "submitit" / "1001" / "1001_submitted.pkl")
    assert submitted.function.stop_timeout_s == 200


@pytest.mark.parametrize("argv, error", [
    (["--slurm-arg", "time=10"], "--slurm-arg time: use --time"),
    (["--slurm-arg", "dependency=afterok:1"], "--slurm-arg dependency: the grid sets it for each job"),
    (["--slurm-arg", "account="], "expected KEY=VALUE"),
    (["--slurm-arg", "gres=gpu:a100:2"], "asks for 2 GPU(s) per job but --gpus-per-net is 1"),
    (["--stop-timeout", "120"], "--stop-timeout 120 s must be above 0 and below --signal-delay 120 s"),
    (["--time", "1", "--signal-delay", "30", "--stop-timeout", "20"], "a 1-minute time limit leaves no time to train"),
    (["--time", "3h"], "--time '3h': give minutes (a whole number) or auto"),
    (["--time", "auto"], "net 'b' has not trained yet, so its speed is unknown"),
])
def test_bad_submit_options_are_one_line_errors(tmp_path: Path, fake_slurm: Path, capsys, argv, error) -> None:
    from replicate.cli import main

    plan_path = make_plan(tmp_path, [("b", None)])
    assert main(["grid", "submit", "--plan", str(plan_path), "--slurm-partition", "gpu", *argv]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and error in lines[0], lines
    assert not list(fake_slurm.iterdir())  # nothing was queued


def test_time_is_capped_at_the_partition_limit(tmp_path: Path, fake_slurm: Path, capsys, monkeypatch) -> None:
    # SLURM would keep a job asking for more than the partition's MaxTime pending for ever.
    from replicate.cli import main

    monkeypatch.setenv("FAKE_SLURM_MAXTIME", "1-00:00:00")
    plan_path = make_plan(tmp_path, [("b", None)])
    assert main(["grid", "submit", "--plan", str(plan_path), "--slurm-partition", "gpu"]) == 0
    assert _flags(fake_slurm / "1000.sh")["time"] == "1440"
    assert "queued 1 net(s): b; time limit 1440 min (the partition's MaxTime; asked 4320)" in capsys.readouterr().out


def test_time_is_capped_at_the_max_wall_of_the_qos_asked_for(tmp_path: Path, fake_slurm: Path, capsys,
                                                             monkeypatch) -> None:
    # A QOS's MaxWall below the asked time keeps the job pending for ever too
    # (QOSMaxWallDurationPerJobLimit); where the site has no accounting to ask, the partition's
    # MaxTime still caps it.
    from replicate.cli import main

    monkeypatch.setenv("FAKE_SLURM_MAXTIME", "1-00:00:00")
    plan_path = make_plan(tmp_path, [("b", None)])
    assert main(["grid", "submit", "--plan", str(plan_path), "--slurm-partition", "gpu",
                 "--slurm-arg", "qos=short"]) == 0
    assert _flags(fake_slurm / "1000.sh")["time"] == "1440"
    assert "time limit 1440 min (the partition's MaxTime; asked 4320)" in capsys.readouterr().out
    monkeypatch.setenv("FAKE_SLURM_QOS_MAXWALL", "02:00:00")
    assert main(["grid", "submit", "--plan", str(plan_path), "--slurm-partition", "gpu",
                 "--slurm-arg", "qos=short", "--resubmit"]) == 0
    assert "where name=short" in (tmp_path / "sacctmgr.args").read_text()
    assert "time limit 120 min (QOS short's MaxWall; asked 4320)" in capsys.readouterr().out
    assert _flags(fake_slurm / "1001.sh")["time"] == "120"


def test_time_auto_asks_each_array_for_its_slowest_net(tmp_path: Path, fake_slurm: Path, capsys) -> None:
    from replicate.cli import main

    plan_path = make_plan(tmp_path, [("b", None), ("t", "b")], max_iter=60000)
    for name in ("b", "t"):
        (tmp_path / name / "train.prototxt").write_text(
            'layer { name: "d" type: "Data" top: "data" data_param { source: "x" batch_size: 100 } }\n')
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"step": [{"precision": "fp32", "channels_last": False, "compile": False,
                                           "images_per_s": 1000.0}]}))
    # b has trained 30,000 iterations at 0.05 s each (its own speed wins over the bench's 0.1 s).
    (tmp_path / "b" / "train.log").write_text(
        "I1204 10:00:00.000000 1 solver.cpp:231] Iteration 30000 (20 iter/s, 1s/20 iters), loss = 1\n")
    (tmp_path / "b" / "metrics.jsonl").write_text('{"kind": "train", "iter": 30000}\n')
    assert main(["grid", "submit", "--plan", str(plan_path), "--slurm-partition", "gpu", "--time", "auto",
                 "--speed-from", str(bench), "--time-margin", "1.2"]) == 0
    # b: 30,000 x 0.05 s x 1.2 = 30 min + 5; t: 60,000 x 0.1 s x 1.2 = 120 min + 5.
    assert [_flags(fake_slurm / f"{n}.sh")["time"] for n in (1000, 1001)] == ["35", "125"]
    out = capsys.readouterr().out
    assert "time limit 35 min for b (0.42 h left at 0.05 s/iteration from its train.log, x1.2 + 5 min)" in out, out
