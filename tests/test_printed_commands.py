"""Commands this program prints for the user to type run as printed: from the repository root,
in a shell where `python` is not the project's interpreter (the venv made but not activated)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from replicate.commands.demo import _step
from replicate.invocation import command, interpreter

ROOT = Path(__file__).resolve().parents[1]


def _foreign_pythons(folder: Path) -> str:
    """A PATH whose `python` and `python3` are some other interpreter that lacks our packages."""
    folder.mkdir()
    for name in ("python", "python3"):
        (folder / name).write_text("#!/bin/sh\necho \"No module named 'matplotlib'\" >&2\nexit 1\n")
        (folder / name).chmod(0o755)
    return os.pathsep.join([str(folder), "/usr/bin", "/bin"])


def test_a_command_the_demo_prints_runs_verbatim_through_a_shell_from_the_repository_root(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    path = _foreign_pythons(tmp_path / "bin")
    monkeypatch.setenv("PATH", path)
    out = tmp_path / "source"
    _step("1/6 a generated ImageNet-like dataset", [
        "data", "synth", "--out", str(out), "--classes", "2", "--train-per-class", "1",
        "--val-per-class", "1", "--size", "16", "--seed", "1"])
    printed = [line[2:] for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]
    assert len(printed) == 1
    made = (out / "synth.json").read_bytes()
    for file in sorted(out.rglob("*"), reverse=True):  # the folder made again by the printed command
        file.unlink() if file.is_file() else file.rmdir()
    out.rmdir()
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(printed[0], shell=True, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{printed[0]}\n{done.stderr}"
    assert (out / "synth.json").read_bytes() == made


def test_the_interpreter_is_python_where_that_finds_it_else_its_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", _foreign_pythons(tmp_path / "bin"))
    assert interpreter() == os.path.abspath(sys.executable)  # outside the current folder: absolute
    monkeypatch.chdir(Path(sys.executable).parents[2])  # e.g. the repository root of .venv/bin/python
    assert interpreter() == os.path.relpath(os.path.abspath(sys.executable))
    name = os.path.basename(sys.executable)
    monkeypatch.setenv("PATH", os.path.dirname(os.path.abspath(sys.executable)))  # an activated venv
    if name in ("python", "python3"):
        assert interpreter() == name
    assert command("train", "a b.prototxt") == f"{interpreter()} -m replicate train 'a b.prototxt'"
