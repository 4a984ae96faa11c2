"""Command line: `python -m replicate <command> [<subcommand>] ...`.

Every module in `replicate.commands` is one command named after the module; a package there
(`commands/data/`, `commands/grid/`) is a command whose modules are its subcommands.  A command
module provides a docstring (its help: first line = summary), `add_arguments(parser)` and
`run(args) -> int`.  Discovering them keeps this file free of a list every feature must edit.

Only the command named on the command line is imported (every one only for help or a name that
is none of them): the grid trains each net in a fresh `python -m replicate train`, and importing
every command (matplotlib and scipy for `results`, ...) would cost each of them a second of CPU.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

from replicate import commands
from replicate.errors import ReplicateError


def _modules(package: ModuleType, wanted: str | None) -> dict[str, ModuleType]:
    """The command modules of `package`: only `wanted` when that names one of them, else all."""
    names = sorted(i.name for i in pkgutil.iter_modules(package.__path__) if not i.name.startswith("_"))
    if wanted is not None and wanted.replace("-", "_") in names:
        names = [wanted.replace("-", "_")]
    return {name: importlib.import_module(f"{package.__name__}.{name}") for name in names}


def _add_commands(sub: argparse._SubParsersAction, package: ModuleType, argv: list[str]) -> None:
    """Add the commands of `package`; `argv` is what follows on the command line (its first
    word, when it names a command, is the only one imported)."""
    wanted = argv[0] if argv else None
    for name, module in _modules(package, wanted).items():
        doc = (module.__doc__ or name).strip()
        cmd = sub.add_parser(
            name.replace("_", "-"),
            help=doc.splitlines()[0],
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if hasattr(module, "__path__"):  # a command with subcommands
            _add_commands(cmd.add_subparsers(metavar="SUBCOMMAND", required=True), module, argv[1:])
        else:
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (None: every command, as for --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m replicate",
        description="Caffe-faithful replication of Yosinski et al. 2014 on PyTorch.",
    )
    _add_commands(parser.add_subparsers(metavar="COMMAND", required=True), commands, argv or [])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ReplicateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
