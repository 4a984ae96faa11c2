"""The grid on a real SLURM cluster (tools/slurm_cluster.sh: slurmctld, slurmd and munged on this
machine): `grid submit` of base nets and of transfer nets held by `afterok`, two jobs at once;
one job preempted with `scontrol requeue`, another `scancel`ed and submitted again; every net
ends finished, with the weights and results of the same plan run locally by `grid run`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from replicate.cli import main
from replicate.experiments import netstate
from replicate.experiments.planfile import read_plan
from replicate.experiments.status import collect
from replicate.results.runs import find_runs
from solver_support import random_run, same_weights

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "tools" / "slurm_cluster.sh"
BASE_ITER, TRANSFER_ITER = 1000, 20  # a base net trains for seconds: long enough to be caught mid-run


@pytest.fixture(scope="module")
def partition() -> str:
    """The cluster's default partition, the cluster started first if it is not running.  Where
    SLURM is not installed the tests skip, except in CI (CI or REPLICATE_CI set), where they fail;
    where it is installed but cannot start they fail with the reason."""
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        if os.environ.get("CI") or os.environ.get("REPLICATE_CI"):
            pytest.fail("SLURM is not installed, and CI must run these tests (.ci/run installs it: "
                        "tools/slurm_cluster.sh install)")
        pytest.skip("SLURM is not installed here (tools/slurm_cluster.sh install, then start, as root)")
    if subprocess.run([CLUSTER, "status"], capture_output=True).returncode != 0:
        started = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=120)
        if started.returncode != 0:
            why = (started.stderr or started.stdout).strip().splitlines() or ["no output"]
            pytest.fail(f"the SLURM cluster cannot start: {why[-1]}")
    found = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=60)
    defaults = [p.rstrip("*") for p in found.stdout.split() if p.endswith("*")]
    assert found.returncode == 0 and defaults, f"no default partition: {found.stdout!r} {found.stderr!r}"
    return defaults[0]


def _plan(root: Path) -> Path:
    """Two base nets and a transfer net on each: the e2e nets with crops, mirrors and dropout."""
    nets = []
    for name, base in (("b1", None), ("b2", None), ("t1", "b1"), ("t2", "b2")):
        max_iter, every = (TRANSFER_ITER, 10) if base else (BASE_ITER, 100)
        random_run(root, name, {"max_iter: 14": f"max_iter: {max_iter}", "snapshot: 3": f"snapshot: {every}",
                                "test_interval: 4": f"test_interval: {every}",
                                "stepsize: 8": "stepsize: 100\nrandom_seed: 11"})
        (root / name / "manifest.json").write_text(json.dumps({"name": name, "max_iter": max_iter}))
        nets.append({"name": name, "dir": name, "solver": "solver.prototxt", "depends_on": base, "max_iter": max_iter,
                     "weights": f"../{base}/snap_iter_{BASE_ITER}.caffemodel" if base else None})
    (root / "plan.json").write_text(json.dumps({"version": 1, "nets": nets}))
    return root / "plan.json"


def _wait(what: str, ready, timeout: float, diagnose) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := ready():
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}\n{diagnose()}")


def _slurm(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _job_of(net_dir: Path) -> str | None:
    """The job training the net now: its status says running, and it has a snapshot already."""
    record = netstate.read_status(net_dir)
    if record.get("state") == netstate.RUNNING and list(net_dir.glob("snap_iter_*.solverstate")):
        return record.get("job_id")
    return None


def test_grid_survives_requeue_and_scancel_on_slurm(tmp_path: Path, partition: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic locally and in the jobs, which inherit it
    local, cluster = _plan(tmp_path / "local"), _plan(tmp_path / "cluster")
    assert main(["grid", "run", "--plan", str(local), "--device", "cpu", "--jobs", "2"]) == 0

    def diagnose() -> str:
        lines = [_slurm("squeue", "--array", "--format=%i %T %r").stdout]
        for net in ("b1", "b2", "t1", "t2"):
            lines.append(f"{net}: {netstate.read_status(cluster.parent / net)}")
            out = cluster.parent / net / "train.out"
            lines += out.read_text().splitlines()[-5:] if out.exists() else []
        for log in sorted((cluster.parent / "submitit").glob("*/*_log.err"))[-4:]:
            lines += [f"== {log.name}", *log.read_text().splitlines()[-8:]]
        return "\n".join(lines)

    submit = ["grid", "submit", "--plan", str(cluster), "--slurm-partition", partition, "--gpus-per-net", "0",
              "--cpus-per-task", "1", "--mem-gb", "1", "--time", "10"]
    assert main(submit) == 0
    b1, b2 = (cluster.parent / n for n in ("b1", "b2"))
    # Both base nets train at once (one core each); both are stopped mid-run, after a snapshot.
    jobs = _wait("both base nets to snapshot while running", lambda: (j := (_job_of(b1), _job_of(b2)))[0] and j[1]
                 and j, 180, diagnose)
    assert _slurm("scontrol", "requeue", jobs[0]).returncode == 0
    assert _slurm("scancel", jobs[1]).returncode == 0
    # SLURM holds a requeued job back for two minutes (BeginTime); let it start at once.
    _wait(f"job {jobs[0]} to be requeued", lambda: _slurm("squeue", "--noheader", "--format=%T", "--jobs", jobs[0])
          .stdout.strip() == "PENDING", 60, diagnose)
    # slurmd refuses a launch whose credential dates from the very second the job's previous
    # instance was revoked in ("Killing non-startable batch job: Job credential revoked"): start
    # it a second later, not within the same second.
    time.sleep(2)
    assert _slurm("scontrol", "update", f"JobId={jobs[0]}", "StartTime=now").returncode == 0
    _wait(f"job {jobs[1]} to leave the queue", lambda: jobs[1] not in _slurm("squeue", "--array", "--format=%i").stdout
          .split(), 60, diagnose)
    capsys.readouterr()
    assert main(submit) == 0  # b2 (and t2, whose afterok can no longer be met) queued anew
    out = capsys.readouterr().out
    assert "queued 1 net(s): b2" in out and "b1: already queued as job" in out, out
    _wait("every net to finish", lambda: all(r.state == "done" for r in collect(read_plan(cluster))), 300, diagnose)
    assert main(["grid", "status", "--plan", str(cluster)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "4 nets: 4 done"

    # Each stopped base net snapshotted where the signal found it and resumed from there.
    for net in (b1, b2):
        stops = [json.loads(line) for line in (net / "metrics.jsonl").read_text().splitlines()
                 if '"stopped"' in line]
        assert len(stops) == 1 and stops[0]["requeue"] and 0 < stops[0]["iter"] < BASE_ITER, stops
        assert f"Restored solver state from {net / 'snap_iter_{}.solverstate'.format(stops[0]['iter'])}" in (
            net / "train.log").read_text()
    # The same weights, bit for bit, and the same results as the local run.
    for name, max_iter in (("b1", BASE_ITER), ("b2", BASE_ITER), ("t1", TRANSFER_ITER), ("t2", TRANSFER_ITER)):
        model = f"{name}/snap_iter_{max_iter}.caffemodel"
        assert same_weights(local.parent / model, cluster.parent / model), name
    ours, theirs = find_runs(cluster.parent), find_runs(local.parent)
    assert [(n.name, n.curve.val, n.curve.train, n.stats) for n in ours.nets] == [
        (n.name, n.curve.val, n.curve.train, n.stats) for n in theirs.nets]
    assert len(ours.nets) == 4 and not ours.skipped
