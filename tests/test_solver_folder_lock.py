"""One trainer per run folder: a second waits for the first, then stops naming it; the lock
dies with the trainer, not with the data workers it forked."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replicate.errors import ReplicateError
from replicate.solver import folder_lock
from replicate.solver.run import train
from solver_support import copy_run

HOLDER = """
import os, sys, time
from pathlib import Path
from replicate.solver.folder_lock import hold
with hold(Path(sys.argv[1])):
    if sys.argv[2] == "fork":  # a child that outlives its parent, as a data worker could
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
    print("held", flush=True)
    if sys.argv[2] == "wait":
        sys.stdin.read()
    elif sys.argv[2] == "sleep":
        time.sleep(float(sys.argv[3]))
"""


def _holder(folder: Path, how: str, *extra: str) -> subprocess.Popen:
    """A process that holds `folder`'s lock: until its stdin closes ("wait"), for some seconds
    ("sleep S"), or only until it has forked a child and exits ("fork")."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), how, *extra], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def test_a_second_trainer_waits_then_stops_naming_the_first_and_touches_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(tmp_path, "run")
    before = sorted(p.name for p in run.iterdir())
    holder = _holder(run, "wait")
    try:
        monkeypatch.setattr(folder_lock, "WAIT_S", 1.0)
        started = time.monotonic()
        with pytest.raises(ReplicateError, match=rf"{re.escape(str(run))}: another trainer is training in this folder \(pid "
                                                 rf"{holder.pid} on {socket.gethostname()} since .*\); waited 1 s"):
            train(run / "solver.prototxt", echo=False, force=True)
        assert time.monotonic() - started >= 1.0
        assert f"waiting up to 1 s for the trainer already in {run} to stop (pid {holder.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == sorted(before + [folder_lock.LOCK_FILE])
    finally:
        holder.communicate("")
    train(run / "solver.prototxt", echo=False)  # free again once the first has stopped
    assert (run / "train.log").is_file()


def test_a_second_trainer_starts_as_soon_as_the_first_stops(tmp_path: Path) -> None:
    run = copy_run(tmp_path, "run", {"max_iter: 20": "max_iter: 2"})
    holder = _holder(run, "sleep", "1.5")
    started = time.monotonic()
    train(run / "solver.prototxt", echo=False)
    assert holder.wait(5) == 0
    assert time.monotonic() - started >= 1.0
    assert (run / "snap_iter_2.solverstate").is_file()


def test_the_lock_is_the_trainers_not_its_forked_childrens(tmp_path: Path) -> None:
    """A data worker forked while the lock is held (and still alive after its trainer was
    killed) must not keep a replacement out: the lock is owned by the process."""
    holder = _holder(tmp_path, "fork")
    assert holder.wait(5) == 0
    with folder_lock.hold(tmp_path, wait_s=0):
        pass
    os.killpg(holder.pid, 9)
