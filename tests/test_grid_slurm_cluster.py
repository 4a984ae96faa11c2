"""The grid on a real SLURM cluster (tools/slurm_cluster.sh: slurmctld, slurmd and munged on this
machine): `grid submit` of base nets and of transfer nets held by `afterok`, two jobs at once;
one job preempted with `scontrol requeue`, another `scancel`ed and submitted again; every net
ends finished, with the weights and results of the same plan run locally by `grid run`.  GPU
jobs with a site's constraint and account, each trainer seeing the GPU SLURM gave its job (the
cluster's GPUs are null devices: scheduled, never computed on).  The time limit: SLURM's USR2,
the real trainer's snapshot, the job's requeue, and a resume that continues bit for bit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replicate.cli import main
from replicate.experiments import netstate
from replicate.experiments.netfiles import read_metrics
from replicate.experiments.planfile import read_plan
from replicate.experiments.status import collect
from replicate.results.runs import find_runs
from grid_support import FAKE_TRAIN, invocations, make_plan
from solver_support import random_run, same_weights

# One cluster for all of them, so they stay in this one file: under pytest-xdist's `--dist loadfile`
# (the README's test command) a file's tests run in one worker, one at a time, so that no test's
# jobs wait for another's CPUs and no fixture restarts the cluster under another's jobs.
pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "tools" / "slurm_cluster.sh"
BASE_ITER, TRANSFER_ITER = 1000, 20  # a base net trains for seconds: long enough to be caught mid-run


@pytest.fixture(scope="module")
def partition() -> str:
    """The cluster's default partition, the cluster started first (as root always: the script
    keeps a running cluster whose config is current).  Where SLURM is not installed the tests
    skip, except in CI (CI or REPLICATE_CI set), where they fail; where it is installed but
    cannot start they fail with the reason."""
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        if os.environ.get("CI") or os.environ.get("REPLICATE_CI"):
            pytest.fail("SLURM is not installed, and CI must run these tests (.ci/run installs it: "
                        "tools/slurm_cluster.sh install)")
        pytest.skip("SLURM is not installed here (tools/slurm_cluster.sh install, then start, as root)")
    # As root, start it anyway: a no-op when it runs with this script's config, a restart when
    # an older config (without the GPUs, say) is running.
    if os.geteuid() == 0 or subprocess.run([CLUSTER, "status"], capture_output=True).returncode != 0:
        started = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=120)
        if started.returncode != 0:
            why = (started.stderr or started.stdout).strip().splitlines() or ["no output"]
            pytest.fail(f"the SLURM cluster cannot start: {why[-1]}")
    found = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=60)
    defaults = [p.rstrip("*") for p in found.stdout.split() if p.endswith("*")]
    assert found.returncode == 0 and defaults, f"no default partition: {found.stdout!r} {found.stderr!r}"
    return defaults[0]


@pytest.fixture(autouse=True)
def idle_cluster(partition: str) -> None:
    """Each test starts once the cluster has no job: its waits assume the node's CPUs are its own,
    and the jobs of another test (one still ending, or one run by another pytest-xdist worker)
    would leave its jobs pending instead, to time out later with a less clear message."""
    def queue() -> str:
        return _slurm("squeue", "--noheader", "--format=%i %T %j").stdout.strip()

    _wait("the cluster to have no job (another test's jobs hold it: run this file's tests in one process)",
          lambda: not queue(), 90, queue)


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


def _job_details(job_id: str) -> dict[str, str]:
    """`scontrol show job -d`'s fields of job `job_id` (of that job alone: asked for an array's
    id, scontrol shows every task of the array)."""
    out = _slurm("scontrol", "show", "job", "-d", job_id).stdout
    records = [dict(re.findall(r"(\w+)=(\S*)", block)) for block in re.split(r"\n\s*\n", out)]
    return next((r for r in records if r.get("JobId") == job_id), {})


def test_gpu_jobs_carry_the_sites_options_and_see_the_gpu_slurm_gave_them(tmp_path: Path, partition: str) -> None:
    # Two base nets at once on the node's two GPUs, a transfer net after one of them; the
    # constraint and the account reach every job, the dependants' too.
    plan = make_plan(tmp_path, [("b1", None), ("b2", None), ("t1", "b1")], max_iter=4,
                     fake={n: {"step_s": 0.5} for n in ("b1", "b2", "t1")})
    submit = ["grid", "submit", "--plan", str(plan), "--slurm-partition", partition, "--gpus-per-net", "1",
              "--cpus-per-task", "1", "--mem-gb", "1", "--time", "5", "--slurm-arg", "constraint=ci",
              "--slurm-arg", "account=acme", "--train-command", " ".join(FAKE_TRAIN)]
    assert main(submit) == 0

    def diagnose() -> str:
        logs = sorted((tmp_path / "submitit").glob("*/*_log.err"))
        return "\n".join([_slurm("squeue", "--array", "--format=%i %T %r").stdout,
                          *(f"{n}: {netstate.read_status(tmp_path / n)}" for n in ("b1", "b2", "t1")),
                          *(log.read_text()[-1500:] for log in logs)])

    allocated: dict[str, str] = {}  # job id -> its GRES with the device index, seen while it runs

    def finished(plan: Path) -> bool:
        for job in _slurm("squeue", "--noheader", "--states=RUNNING", "--format=%A").stdout.split():
            if gres := _job_details(job).get("GRES"):
                allocated[job] = gres
        return all(r.state == "done" for r in collect(read_plan(plan)))

    _wait("every net to finish", lambda: finished(plan), 120, diagnose)
    seen = {name: invocations(tmp_path / name)[0] for name in ("b1", "b2", "t1")}
    assert {seen["b1"]["gpu"], seen["b2"]["gpu"]} == {"0", "1"}, seen  # one GPU each, at the same time
    assert seen["b1"]["start"] < seen["b2"]["end"] and seen["b2"]["start"] < seen["b1"]["end"], seen
    for name, run in seen.items():
        job = _job_details(run["slurm_job"])
        assert (job["Account"], job["Features"]) == ("acme", "ci"), (name, job)
        # The GPU the trainer saw is the one SLURM allocated to its job.
        assert run["slurm_gpus"] == run["gpu"], run
        assert allocated.get(run["slurm_job"]) in (None, f"gpu:ci:1(IDX:{run['gpu']})"), (name, allocated)
    assert len(allocated) >= 2, allocated  # seen running: the base nets, at least
    assert seen["t1"]["start"] >= seen["b1"]["end"]

    # A typed GRES instead of the plain GPU count.
    typed = make_plan(tmp_path / "typed", [("g", None)], max_iter=1)
    assert main([*submit[:3], str(typed), *submit[4:], "--slurm-arg", "gres=gpu:ci:1"]) == 0
    _wait("the typed-GRES net to finish", lambda: finished(typed), 120, diagnose)
    run = invocations(tmp_path / "typed" / "g")[0]
    assert run["gpu"] == run["slurm_gpus"] and _job_details(run["slurm_job"])["JOB_GRES"] == "gpu:ci:1", run


def test_the_time_limit_requeues_a_real_trainer_that_resumes_bit_for_bit(tmp_path: Path, partition: str,
                                                                       monkeypatch) -> None:
    """A 1-minute job with --signal-delay 20: SLURM sends USR2 at its first time-limit check 10 s
    or more into the job (it checks every 30 s and signals up to 30 s early), the trainer
    snapshots where it is and the job requeues; once a trainer was stopped mid-run (a signal
    during a slow start-up stops a trainer with nothing to save, and the next instance tries
    again), the next instance is given a longer limit, so that it is not stopped again, and
    resumes from that snapshot.  Its next periodic snapshot equals, bit for bit, the same
    iteration of an uninterrupted run of the same net trained meanwhile on the other core.  The
    net is too long to finish (the signal's arrival time is not known in advance): both runs are
    stopped once compared."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic in the job, which inherits it
    every = 200
    edits = {"max_iter: 14": "max_iter: 1000000", "snapshot: 3": f"snapshot: {every}",
             "test_interval: 4": "test_interval: 1000", "stepsize: 8": "stepsize: 100000\nrandom_seed: 11"}
    net = random_run(tmp_path / "cluster", "long", edits)
    (net / "manifest.json").write_text(json.dumps({"name": "long", "max_iter": 1000000}))
    plan = tmp_path / "cluster" / "plan.json"
    plan.write_text(json.dumps({"version": 1, "nets": [{"name": "long", "dir": "long", "solver": "solver.prototxt",
                                                        "depends_on": None, "max_iter": 1000000, "weights": None}]}))
    reference = random_run(tmp_path / "reference", "long", edits)
    uninterrupted = subprocess.Popen([sys.executable, "-m", "replicate", "train", "solver.prototxt", "--device", "cpu"],
                                     cwd=reference, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    job = None
    try:
        assert main(["grid", "submit", "--plan", str(plan), "--slurm-partition", partition, "--gpus-per-net", "0",
                     "--cpus-per-task", "1", "--mem-gb", "1", "--time", "1", "--signal-delay", "20",
                     "--stop-timeout", "15", "--snapshot-keep", "0"]) == 0
        job = netstate.read_status(net)["job_id"]

        def diagnose() -> str:
            logs = sorted((tmp_path / "cluster" / "submitit").glob("*/*_log.*"))
            return "\n".join([_slurm("squeue", "--format=%i %T %r %M %l").stdout, str(netstate.read_status(net)),
                              *(log.read_text()[-1500:] for log in logs)])

        def stop() -> dict | None:
            return next((r for r in read_metrics(net, frozenset({"stopped"})) if r["iter"] > 0), None)

        stopped = _wait("the time limit's signal to stop the trainer mid-run", stop, 180, diagnose)
        assert stopped["requeue"], stopped
        _wait(f"job {job} to be requeued", lambda: _slurm("squeue", "--noheader", "--format=%T", "--jobs", job)
              .stdout.strip() == "PENDING", 60, diagnose)
        log = (tmp_path / "cluster" / "submitit" / job / f"{job}_0_log.err").read_text()
        assert "SIGUSR2" in log, log  # the time limit's signal, not a preemption's SIGTERM
        # The next instance must run to its next snapshot without another time limit; and start at
        # once rather than after the requeue hold (see the test above for the second's wait).
        time.sleep(2)
        assert _slurm("scontrol", "update", f"JobId={job}", "TimeLimit=10", "StartTime=now").returncode == 0
        resumed = (stopped["iter"] // every + 1) * every
        names = [f"{run}/snap_iter_{resumed}.caffemodel" for run in (net, reference)]
        _wait(f"both runs to snapshot iteration {resumed}", lambda: all(Path(n).exists() for n in names), 120,
              diagnose)
        assert f"Restored solver state from {net / 'snap_iter_{}.solverstate'.format(stopped['iter'])}" in (
            net / "train.log").read_text()
        time.sleep(0.5)  # the snapshot is renamed into place once written; let the reference's settle
        assert same_weights(*map(Path, names))
    finally:
        uninterrupted.kill()
        uninterrupted.wait()
        if job is not None:
            _slurm("scancel", job)


def test_grid_status_says_why_slurm_keeps_a_job_pending(tmp_path: Path, partition: str, capsys) -> None:
    """A job that asks for more time than its partition allows (or than a QOS allows that
    `grid submit` could not look up: the one a site gives by default) pends for ever, reason
    PartitionTimeLimit: `grid status` says so and what to do, where it said `queued` for ever.
    A wait that ends by itself (a held job here) shows SLURM's reason alone.  The cluster's
    partition `short` has a MaxTime of one minute."""
    plan_path = make_plan(tmp_path, [("long", None), ("held", None), ("gone", None)])
    jobs = {"long": _slurm("sbatch", "--parsable", "--partition", "short", "--time", "5", "--wrap", "true"),
            "held": _slurm("sbatch", "--parsable", "--partition", partition, "--hold", "--wrap", "true")}
    ids = {name: done.stdout.strip() for name, done in jobs.items()}
    try:
        assert all(done.returncode == 0 for done in jobs.values()), [d.stderr for d in jobs.values()]
        for name, job in ids.items():
            netstate.write_status(tmp_path / name, netstate.QUEUED, net=name, job_id=job)

        def reasons() -> str:
            return _slurm("squeue", "--noheader", "--format=%i %T %r").stdout

        _wait("SLURM's pending reasons", lambda: "PartitionTimeLimit" in reasons() and "JobHeldUser" in reasons(),
              60, reasons)
        assert main(["grid", "status", "--plan", str(plan_path)]) == 0
        rows = [line.split(None, 5) for line in capsys.readouterr().out.splitlines()[1:-1]]
        notes = {row[0]: row[5] if len(row) > 5 else "" for row in rows}
        assert notes["long"] == (f"job {ids['long']}, pending (PartitionTimeLimit): SLURM will never start this job "
                                 "as submitted; `grid submit --resubmit` with a shorter --time (a net that reaches "
                                 "its limit snapshots, requeues and resumes) queues it anew")
        assert notes["held"] == f"job {ids['held']}, pending (JobHeldUser)"
        assert notes["gone"] == ""  # waiting: no job, no note
    finally:
        _slurm("scancel", *ids.values())
