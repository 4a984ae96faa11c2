"""The command line imports only the command it runs, and still lists every command for help."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

from replicate import commands
from replicate.cli import main


def test_a_command_imports_only_its_own_module() -> None:
    probe = ("import sys; from replicate.cli import build_parser; "
             "build_parser(['data', 'synth', '--out', 'x']); "
             "print(sorted(m for m in sys.modules if m.startswith('replicate.commands.')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['replicate.commands.data', 'replicate.commands.data.synth']"


def test_help_and_an_unknown_command_list_every_command(capsys) -> None:
    names = [i.name.replace("_", "-") for i in pkgutil.iter_modules(commands.__path__) if not i.name.startswith("_")]
    with pytest.raises(SystemExit) as exit_help:
        main(["--help"])
    assert exit_help.value.code == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in names)
    with pytest.raises(SystemExit) as exit_bad:
        main(["trian"])
    assert exit_bad.value.code == 2
    err = capsys.readouterr().err
    assert all(f"'{name}'" in err for name in names), err
