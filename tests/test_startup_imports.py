"""A process starts with only what it needs: the command line imports only the command it runs,
and training without torch.compile never loads Dynamo.  A trainer started by the grid (61 of
them in the demo, 148 in the paper's grid) must not pay for what `results`, `bench` or a
compiled run load: seconds of CPU each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gpu_support import run_dir

from replicate.cli import main

_LOADED = """
import sys
from replicate.cli import build_parser
build_parser(sys.argv[1:])
print(" ".join(m for m in ("torch", "torch._dynamo", "scipy.stats", "matplotlib") if m in sys.modules))
"""


@pytest.mark.parametrize("argv, loaded", [
    (["grid", "status", "--plan", "p.json"], ""),
    (["generate", "--all"], ""),
    (["results", "--runs", "r"], "scipy.stats matplotlib"),
    (["train", "solver.prototxt"], "torch"),
])
def test_only_the_command_run_is_imported(argv: list[str], loaded: str) -> None:
    done = subprocess.run([sys.executable, "-c", _LOADED, *argv], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == loaded


def test_the_command_list_comes_from_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command, summary in (("train", "Train a net from a solver prototxt"), ("grid", "Run the paper's experiment grid"),
                             ("results", ""), ("demo", "The embedded default")):
        assert f"    {command}" in out and summary in out
    with pytest.raises(SystemExit):
        main(["grid", "--help"])
    assert "submit" in capsys.readouterr().out


_TRAIN = """
import sys
from replicate.solver.run import train
train(sys.argv[1], device="cpu", echo=False)
print("torch._dynamo" in sys.modules)
"""


def test_training_without_compile_never_loads_dynamo(tmp_path: Path) -> None:
    # The Data layer's forward must stay outside compiled graphs (tests/test_gpu_options.py
    # compiles through it); it says so without importing Dynamo until something compiles.
    solver = run_dir(tmp_path / "run")
    done = subprocess.run([sys.executable, "-c", _TRAIN, str(solver)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    assert (tmp_path / "run" / "snap_iter_4.caffemodel").is_file()
