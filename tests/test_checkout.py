"""A copy of replicate installed without its checkout (`pip install .`) says so in one line.

The templates, solver configs, the paper's results and the benchmark net are the checkout's
top-level folders (replicate.checkout); the package alone, copied as a wheel would install it,
must not answer "unknown architecture 'caffenet' (known: ; ...)" or a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import replicate
from replicate.checkout import in_checkout
from replicate.errors import ReplicateError
from replicate.templates import load_arch

EXPECTED = "installed without one; install it from a clone with `pip install -e <clone>`"


@pytest.mark.parametrize("argv", [["generate", "--n", "3", "--treatment", "AnB", "--out", "out"],
                                  ["demo", "--out", "out"], ["results", "--runs", "runs"]])
def test_the_package_without_its_checkout_says_how_to_install_it(tmp_path: Path, argv: list[str]) -> None:
    site = tmp_path / "site"
    shutil.copytree(Path(replicate.__file__).parent, site / "replicate", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "runs").mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-m", "replicate", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {site}/") and lines[0].endswith(EXPECTED), done.stderr


def test_in_a_checkout_a_missing_file_is_left_to_its_own_error(tmp_path: Path) -> None:
    assert in_checkout(tmp_path / "absent") == tmp_path / "absent"
    with pytest.raises(ReplicateError, match=r"unknown architecture 'nosuch' \(known: .*caffenet"):
        load_arch("nosuch")
