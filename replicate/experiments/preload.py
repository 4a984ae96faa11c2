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

Python's forkserver re-imports the parent's main script in every child (as `__mp_main__`), so it
is used only where that is possible (`usable`): under `python -m replicate`, pytest or a script
file; a grid driven from a program read from stdin keeps plain subprocesses.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from multiprocessing.context import ForkServerContext
from pathlib import Path

#: What the server imports before forking: its signal dispositions (forkserver_signals), then the
#: `train` command and through it torch, the engine and the solver.
PRELOAD = ("replicate.experiments.forkserver_signals", "replicate.commands.train")
_server: ForkServerContext | None = None
#: How the line a preloaded trainer ends train.out with starts (its CPU time, never its error).
CPU_TIME = "trainer process CPU time: "


def usable() -> bool:
    """Whether a forked child can import this process's main module: it has none, was run with
    -m (which multiprocessing does not re-run), or is a file that still exists."""
    main = sys.modules["__main__"]
    path = getattr(main, "__file__", None)
    return getattr(main.__spec__, "name", None) is not None or path is None or os.path.isfile(path)


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
