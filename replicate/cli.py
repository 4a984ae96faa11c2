"""Command line: `python -m replicate <command> [<subcommand>] ...`.

Every module in `replicate.commands` is one command named after the module; a package there
(`commands/data/`, `commands/grid/`) is a command whose modules are its subcommands.  A command
module provides a docstring (its help: first line = summary), `add_arguments(parser)` and
`run(args) -> int`.  Discovering them keeps this file free of a list every feature must edit.

Only the command being run is imported: the others are listed from their docstrings, read
without importing them.  A trainer started by the grid then does not load what `results` or
`bench` need (scipy, matplotlib, torch.compile's machinery): seconds of every start.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

from replicate import commands
from replicate.errors import ReplicateError


def _docstring(package: ModuleType, name: str, is_package: bool) -> str:
    """A command module's docstring, read from its source without importing it."""
    folder = Path(package.__path__[0])
    source = folder / name / "__init__.py" if is_package else folder / f"{name}.py"
    return (ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or name).strip()


def _add_commands(sub: argparse._SubParsersAction, package: ModuleType, wanted: list[str] | None) -> None:
    """A parser for every command of `package`; arguments only for the one `wanted` names first
    (every command when `wanted` is None)."""
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        command = info.name.replace("_", "-")
        chosen = wanted is None or (bool(wanted) and wanted[0] == command)
        doc = _docstring(package, info.name, info.ispkg)
        cmd = sub.add_parser(command, help=doc.splitlines()[0], description=doc,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        if not chosen:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if info.ispkg:  # a command with subcommands
            _add_commands(cmd.add_subparsers(metavar="SUBCOMMAND", required=True), module,
                          None if wanted is None else wanted[1:])
        else:
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the command line it will parse, only that command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="python -m replicate",
        description="Caffe-faithful replication of Yosinski et al. 2014 on PyTorch.",
    )
    wanted = None if argv is None else [word for word in argv if not word.startswith("-")][:2]
    _add_commands(parser.add_subparsers(metavar="COMMAND", required=True), commands, wanted)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(argv).parse_args(argv)  # a command's module may read the checkout's files
        return int(args._run(args) or 0)
    except ReplicateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
