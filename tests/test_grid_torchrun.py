"""A net trained by torchrun's data-parallel processes (`grid submit --gpus-per-net N`) and stopped
by SIGTERM: signals reach the processes at different moments (here only one of them gets it), yet
both stop at the same iteration after one snapshot, and the grid reads the stop as a requeue (a
resumed run of several processes reads the same sidecar as one process: test_solver_resume.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from gpu_support import run_dir

from replicate.experiments import netstate
from replicate.experiments.launch import conclude, launch, torchrun_command
from replicate.experiments.planfile import PlannedNet


def _rank_pid(torchrun: int, rank: int) -> int:
    """The process of `rank` among torchrun's children (RANK in its environment)."""
    for proc in Path("/proc").iterdir():
        try:
            parent = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("PPid:"))
            if int(parent.split()[1]) == torchrun and f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (OSError, ValueError):  # not a process, or one that has just ended
            continue
    raise AssertionError(f"no process of rank {rank} under torchrun {torchrun}")


def test_sigterm_to_one_torchrun_process_stops_both_at_one_snapshot(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    solver = run_dir(tmp_path / "net")
    solver.write_text(solver.read_text().replace("max_iter: 4", "max_iter: 100000")
                      .replace("test_interval: 2", "test_interval: 100") + "snapshot: 5\n")
    net = PlannedNet("net", solver.parent, solver, None, None, 100000)
    proc = launch(net, device="cpu", train_command=torchrun_command(2))
    try:
        deadline = time.monotonic() + 120
        while not list(solver.parent.glob("snap_iter_*.solverstate")) and proc.process.poll() is None:
            assert time.monotonic() < deadline, "no snapshot within 2 minutes"
            time.sleep(0.05)
        os.kill(_rank_pid(proc.process.pid, 1), signal.SIGTERM)
        # Processes that disagreed on where to stop would hang in an all-reduce; a lost request
        # would train on to max_iter.
        proc.process.wait(120)
    finally:
        if proc.process.poll() is None:  # never leave a run training (and snapshotting) behind
            os.killpg(proc.process.pid, signal.SIGKILL)
            proc.process.wait()
    record = conclude(proc)
    # torchrun exits 1 when a process exits 75; the run's last record says why it stopped.
    assert (record["state"], record["returncode"], record.get("requeue")) == (netstate.STOPPED, 1, True)
    log = (solver.parent / "train.log").read_text()
    stopped = int(log.split("Stopped by a signal to another process of this run (requeue) at iteration ")[1]
                  .split(";")[0])
    assert 5 <= stopped < 100000 and (solver.parent / f"snap_iter_{stopped}.solverstate").is_file()

