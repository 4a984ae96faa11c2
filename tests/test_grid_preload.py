"""CPU trainers forked from the preloaded server behave as `python -m replicate train` would: own
process and session, output appended to train.out, the trainer's exit status, SIGINT stops with
a snapshot; and starting one costs the grid milliseconds, not the seconds of a fresh import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpu_support import run_dir

from replicate.experiments.preload import PreloadedTrainer
from replicate.solver.requests import EXIT_REQUEUE


def _training(tmp_path: Path) -> tuple[PreloadedTrainer, Path]:
    """A forked trainer of a run too long to end by itself, returned once it has trained a step."""
    solver = run_dir(tmp_path / "run", "max_iter: 1000000 test_interval: 1000000")
    folder = solver.parent
    started = time.process_time()
    trainer = PreloadedTrainer(["train", solver.name, "--device", "cpu"], folder, dict(os.environ),
                               folder / "train.out")
    assert time.process_time() - started < 1.0  # a fork, not an import of torch
    deadline = time.monotonic() + 120
    metrics = folder / "metrics.jsonl"
    while not metrics.is_file() or '"kind": "train"' not in metrics.read_text():
        if trainer.poll() is not None or time.monotonic() > deadline:
            trainer.kill()
            raise AssertionError((folder / "train.out").read_text())
        time.sleep(0.2)
    return trainer, folder


def test_a_bad_command_line_exits_2_with_its_error_in_the_output(tmp_path: Path) -> None:
    out = tmp_path / "train.out"
    out.write_text("==== earlier attempt\n")
    trainer = PreloadedTrainer(["train", "missing.prototxt", "--device", "cpu"], tmp_path, dict(os.environ), out)
    assert trainer.wait(60) == 2 and trainer.returncode == 2 and trainer.poll() == 2
    text = out.read_text()
    assert text.startswith("==== earlier attempt\n")  # appended, as the grid's header expects
    assert "error:" in text and "missing.prototxt" in text
    assert text.splitlines()[-1].startswith("trainer process CPU time: ")


def test_sigint_stops_a_forked_trainer_after_a_snapshot(tmp_path: Path) -> None:
    trainer, folder = _training(tmp_path)
    try:
        assert trainer.pid != os.getpid() and os.getsid(trainer.pid) == trainer.pid  # own session
        trainer.send_signal(signal.SIGINT)
        assert trainer.wait(120) == 0, (folder / "train.out").read_text()
    finally:
        trainer.kill()
    assert list(folder.glob("snap_iter_*.solverstate"))
    assert "stopped at iteration" in (folder / "train.out").read_text()


def test_a_forked_trainer_that_dies_in_native_code_leaves_its_stack_in_its_output(tmp_path: Path) -> None:
    """An abort (what a C++ std::terminate raises) during training: train.out says where the
    trainer was, as a `python -m replicate train` subprocess's output does."""
    trainer, folder = _training(tmp_path)
    try:
        os.kill(trainer.pid, signal.SIGABRT)
        assert trainer.wait(60) == -signal.SIGABRT
    finally:
        trainer.kill()
    text = (folder / "train.out").read_text()
    assert "Fatal Python error: Aborted" in text and "replicate/solver/" in text, text


def _plan(tmp_path: Path) -> Path:
    """A plan of one 4-iteration net in `tmp_path`."""
    solver = run_dir(tmp_path / "run")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "nets": [{
        "name": "run", "dir": "run", "solver": solver.name, "max_iter": 4,
        "depends_on": None, "weights": None}]}))
    return plan


def _train_out(tmp_path: Path) -> str:
    out = tmp_path / "run" / "train.out"
    return out.read_text() if out.is_file() else ""


@pytest.mark.parametrize("how", ["stdin", "script", "module"])
def test_a_grid_driven_from_a_program_without_a_main_guard_trains_in_plain_subprocesses(
        tmp_path: Path, how: str) -> None:
    """Multiprocessing re-runs the parent's main script, or its main module run with -m, in every
    forked child before its target: a program read from stdin has no file to re-run (every trainer
    failed with FileNotFoundError '<stdin>'), and a script or module without an `if __name__ ==
    "__main__"` guard ran its `grid run` again in every trainer (each met the grid's lock and
    failed).  Only a package's `__main__` (`python -m replicate`) is never re-run."""
    program = ("import sys\nfrom replicate.cli import main\n"
               f"sys.exit(main(['grid', 'run', '--plan', {str(_plan(tmp_path))!r}, '--device', 'cpu']))\n")
    (tmp_path / "drive.py").write_text(program)
    command = {"stdin": ["-"], "script": [str(tmp_path / "drive.py")], "module": ["-m", "drive"]}[how]
    done = subprocess.run([sys.executable, *command], input=program, text=True, capture_output=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr + _train_out(tmp_path)
    assert "trainer process CPU time" not in _train_out(tmp_path)  # a Popen child


def test_a_grid_that_found_this_package_through_a_sys_path_edit_trains_in_plain_subprocesses(
        tmp_path: Path) -> None:
    """The forkserver is a fresh interpreter that does not take its parent's sys.path (Python
    3.11-3.13) and skips a preload it cannot import without a word: its trainers then ran, forked
    from a server without forkserver_signals, which a scheduler's SIGTERM kills (a trainer
    stopped for a requeue then counted as failed).  Here the parent (`-c`, no main code to re-run)
    runs with -S (no site-packages, a flag the server inherits) and finds this package and torch
    only through sys.path entries of its own."""
    program = (f"import sys\nsys.path[:0] = {[p for p in sys.path if p]!r}\n"
               "from replicate.experiments import preload\n"
               "from replicate.cli import main\n"
               "print('usable:', preload.usable())\n"
               f"sys.exit(main(['grid', 'run', '--plan', {str(_plan(tmp_path))!r}, '--device', 'cpu']))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-S", "-c", program], text=True, capture_output=True, cwd=tmp_path,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr + _train_out(tmp_path)
    assert "usable: False" in done.stdout
    assert "trainer process CPU time" not in _train_out(tmp_path)  # a Popen child


def test_a_grid_driven_by_python_c_forks_its_trainers(tmp_path: Path) -> None:
    """The other side of the two tests above: with no main code to re-run and this package
    importable as installed, trainers are forked from the preloaded server."""
    program = ("import sys\nfrom replicate.cli import main\n"
               f"sys.exit(main(['grid', 'run', '--plan', {str(_plan(tmp_path))!r}, '--device', 'cpu']))\n")
    done = subprocess.run([sys.executable, "-c", program], text=True, capture_output=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr + _train_out(tmp_path)
    assert "trainer process CPU time" in _train_out(tmp_path)


def test_a_signal_to_the_whole_job_leaves_the_server_to_report_the_trainers_status(tmp_path: Path) -> None:
    """SLURM's scancel or requeue sends SIGTERM to every process of the job, the forkserver too; a
    killed server cannot report its trainers' exit statuses (the grid then saw 255, "failed",
    for a trainer that had stopped after a snapshot with exit 75)."""
    from multiprocessing import forkserver

    trainer, folder = _training(tmp_path)
    try:
        server = forkserver._forkserver._forkserver_pid
        assert server is not None and server != trainer.pid
        for pid in (server, trainer.pid):
            os.kill(pid, signal.SIGTERM)
        assert trainer.wait(120) == EXIT_REQUEUE, (folder / "train.out").read_text()
        os.kill(server, 0)  # the server lives on for the next trainer
    finally:
        trainer.kill()
    assert list(folder.glob("snap_iter_*.solverstate"))
