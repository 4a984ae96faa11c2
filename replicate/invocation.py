"""This program's command lines as the user can type them, for the commands it prints.

`python -m replicate ...` runs only where `python` is the interpreter this package is installed
in: after the project's .venv was activated, not in a shell that merely created it.  So a command
we print names the interpreter that runs us now: plain `python` when that name finds it on PATH,
else its path, relative to the current folder when it lies inside it (`.venv/bin/python`),
absolute otherwise.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys


def interpreter() -> str:
    """The shortest way to name, from the current folder, the interpreter running now.  Paths are
    compared as written, not resolved: a venv's `python` is a link to the system's, which knows
    nothing of the venv's packages."""
    running = os.path.abspath(sys.executable)
    for name in ("python", "python3"):
        found = shutil.which(name)
        if found is not None and os.path.abspath(found) == running:
            return name
    relative = os.path.relpath(running)
    if relative.startswith(os.pardir):
        return running
    return relative if os.sep in relative else os.curdir + os.sep + relative  # a path, not a name


def command(*words: str) -> str:
    """`<interpreter> -m replicate <words>`, each word quoted for a POSIX shell."""
    return shlex.join([interpreter(), "-m", "replicate", *words])
