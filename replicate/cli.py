"""Command line: `python -m replicate <command> [<subcommand>] ...`.

Every module in `replicate.commands` is one command named after the module; a package there
(`commands/data/`, `commands/grid/`) is a command whose modules are its subcommands.  A command
module provides a docstring (its help: first line = summary), `add_arguments(parser)` and
`run(args) -> int`.  Discovering them keeps this file free of a list every feature must edit.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

from replicate import commands
from replicate.errors import ReplicateError


def _modules(package: ModuleType) -> dict[str, ModuleType]:
    found = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found[info.name] = importlib.import_module(f"{package.__name__}.{info.name}")
    return found


def _add_commands(sub: argparse._SubParsersAction, package: ModuleType) -> None:
    for name, module in _modules(package).items():
        doc = (module.__doc__ or name).strip()
        cmd = sub.add_parser(
            name.replace("_", "-"),
            help=doc.splitlines()[0],
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if hasattr(module, "__path__"):  # a command with subcommands
            _add_commands(cmd.add_subparsers(metavar="SUBCOMMAND", required=True), module)
        else:
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m replicate",
        description="Caffe-faithful replication of Yosinski et al. 2014 on PyTorch.",
    )
    _add_commands(parser.add_subparsers(metavar="COMMAND", required=True), commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ReplicateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
