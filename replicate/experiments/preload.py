"""CPU trainers forked from a process that has already imported the trainer.

Every net of a grid trains in its own process, so that a crash, a kill or a leak stays with its
net.  Started as `python -m replicate train`, each such process first imports torch and this
package: 3-4 s of CPU, as much as a whole net of the CPU demo takes to train (61 nets of
seconds each).  Here one forkserver process (Python's multiprocessing) imports the trainer once
and every trainer is forked from it: still a process of its own (pid, session, exit status,
signals, stdout and stderr appended to its net's train.out), started in milliseconds.  Its last
line in train.out is the CPU time it used, which no `time` of the grid can see (the forkserver
reaps it).

Only for CPU trainers: nothing is computed before the fork (the server only imports), and a GPU
trainer keeps its own `python -m replicate train` so that it initialises CUDA in a fresh process.
`PreloadedTrainer` answers what the grid asks of a `subprocess.Popen`: pid, poll, wait,
send_signal, kill.

Python's multiprocessing re-runs the parent's main script, or a main module run with -m, in every
child before its target (as `__mp_main__`): a driver without an `if __name__ == "__main__"` guard
would run again in each trainer (a script's `grid run` started again in every trainer, met its
own lock, and every trainer failed with its output on the grid's terminal).  So the server is
used only where no main code is re-run (`usable`): under `python -m replicate` or
`python -m pytest` (a package's `__main__` is never re-run), from `python -c` or an interactive
session; a grid driven from a script keeps plain subprocesses.  So too where the server would
not import this very package: it is a fresh interpreter that does not take this process's
`sys.path` (Python 3.11-3.13), and it skips a preload it cannot import without a word.
"""

from __future__ import annotations

import faulthandler
import functools
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from multiprocessing import spawn
from multiprocessing.context import ForkServerContext
from pathlib import Path

import replicate

#: What the server imports before forking: its signal dispositions (forkserver_signals), then the
#: `train` command and through it torch, the engine and the solver.
PRELOAD = ("replicate.experiments.forkserver_signals", "replicate.commands.train")
_server: ForkServerContext | None = None
#: How the line a preloaded trainer ends train.out with starts (its CPU time, never its error).
CPU_TIME = "trainer process CPU time: "


def usable() -> bool:
    """Whether a forked trainer would run none of this process's main code (see the module's
    docstring: multiprocessing skips only a package's `__main__` and a main with no file) and the
    server imports this very package (`_server_imports_this_package`)."""
    main = sys.modules["__main__"]
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        reruns_main = name != "__main__" and not name.endswith(".__main__")
    else:
        reruns_main = getattr(main, "__file__", None) is not None
    return not reruns_main and _server_imports_this_package()


@functools.cache
def _server_imports_this_package() -> bool:
    """Whether a fresh interpreter, started as multiprocessing starts the server (this executable
    and interpreter flags, this environment and working directory), finds this very package.

    Where this process found it through a `sys.path` edit of its own, the server would not: its
    preloads would fail silently, and its trainers, forked from a server that lacks
    forkserver_signals, would count as failed when a scheduler's SIGTERM killed it (its children's
    exit status then reads 255) although each had stopped cleanly for a requeue.  Where the server
    found another copy of the package, the trainers would run that copy's code.  One probe per
    process, some 20 ms."""
    probe = "import importlib.util as u; s = u.find_spec('replicate'); print(s.origin if s else '')"
    # multiprocessing starts the server with these flags (multiprocessing.util re-exports them).
    command = [spawn.get_executable(), *subprocess._args_from_interpreter_flags(), "-c", probe]  # type: ignore[attr-defined]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    found = done.stdout.strip()
    return (done.returncode == 0 and bool(found) and replicate.__file__ is not None
            and os.path.realpath(found) == os.path.realpath(replicate.__file__))


def _context() -> ForkServerContext:
    global _server
    if _server is None:
        context = multiprocessing.get_context("forkserver")
        assert isinstance(context, ForkServerContext)
        context.set_forkserver_preload(list(PRELOAD))
        _server = context
    return _server


def _train(argv: list[str], cwd: str, env: dict[str, str], output: str, cpus: tuple[int, ...] | None) -> None:
    """The forked trainer: `python -m replicate <argv>` as a subprocess would run it, in its own
    session, in `cwd`, with `env`, stdin empty, stdout and stderr appended to `output`,
    SIGUSR2 (a scheduler's warning) ignored until the trainer installs its handler, as launch's
    Popen children do, and a native crash's Python stacks written to `output` (faulthandler), as
    `python -m replicate` writes them.  It runs on `cpus` (None: the server's) with the torch
    threads `env`'s OMP_NUM_THREADS asks for: torch read that variable when the server imported
    it, so a fresh process's reading of it is repeated here."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # ignored by the server (forkserver_signals)
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))
    out = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((out, 1), (out, 2), (null, 0)):
        os.dup2(fd, target)
    os.close(out)
    os.close(null)
    faulthandler.enable()
    from replicate.cli import main

    try:
        code = main(argv)
    finally:
        # The forkserver, not the grid, reaps this process, so no `time` of the grid sees its CPU.
        cpu = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for field in ("ru_utime", "ru_stime"))
        print(f"{CPU_TIME}{cpu:.2f} s", file=sys.stderr, flush=True)
    sys.exit(code)


class PreloadedTrainer:
    """`python -m replicate <argv>` forked from the preloaded server, seen as a Popen."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], output: Path,
                 cpus: tuple[int, ...] | None = None) -> None:
        self.args = list(argv)
        self._process = _context().Process(
            target=_train, args=(self.args, str(cwd), dict(env), str(output), cpus), name=f"train {cwd}")
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return code

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
