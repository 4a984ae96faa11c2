"""Start one net's training as a subprocess and record how it ended.

This is the grid's whole contact with training: the `train` command line (`solver.prototxt
[--weights W | --snapshot S] [--force] [--device D]`, run in the net's folder) and the files it leaves.
The command is a parameter (`train_command`) so that any program keeping that contract can be
driven, e.g. a stand-in trainer in tests; it defaults to this package's own `train`.  How to
start is decided from disk every time (newest solver state, else the base net's weights, else
fresh), which is what makes a stopped grid resumable and a requeued job safe to repeat.
On the CPU this package's own trainer is forked from a process that has imported it once
(replicate.experiments.preload) instead of paying 3-4 s of imports per net.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from replicate.checkout import PROJECT_DIR
from replicate.errors import ReplicateError
from replicate.experiments import netstate
from replicate.experiments.cpushare import CpuShare
from replicate.experiments.netfiles import (METRICS_FILE, has_earlier_run, is_finished, last_record,
                                            newest_solverstate)
from replicate.experiments.planfile import PlannedNet
from replicate.experiments.preload import CPU_TIME, PreloadedTrainer, usable as preload_usable
from replicate.io.model import load_caffemodel
from replicate.net.copy_check import supplied_layers
from replicate.solver.requests import EXIT_REQUEUE

TRAIN_COMMAND: tuple[str, ...] = (sys.executable, "-m", "replicate", "train")
OUTPUT_FILE = "train.out"  # the trainer's stdout and stderr, every attempt appended
ATTEMPT = "==== "  # how the line that starts each attempt in train.out starts
ERROR = "error: "  # how the CLI's one-line errors start (replicate.cli)
#: The grid's default `--snapshot-keep`: only the newest snapshot while a net trains and its final
#: one after, so the paper's 148 CaffeNets end with 148 x 466 MB = 69 GB (Caffe's keep-all: 3 TB).
GRID_SNAPSHOT_KEEP = 1
#: What a trainer needs on PYTHONPATH to import this package: the folder that holds it.
PACKAGE_ROOT = str(PROJECT_DIR)


def torchrun_command(processes: int) -> tuple[str, ...]:
    """`train` as `processes` data-parallel processes on this node (one per GPU), through torchrun
    with a rendezvous of its own, so that several such jobs can share a node."""
    return (sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "replicate", "train")


def train_argv(
    net: PlannedNet, device: str | None, train_command: Sequence[str], snapshot_keep: int | None = None
) -> tuple[list[str], Path | None]:
    """The command that continues `net` from where it stands on disk, and the solver state it
    resumes from (None: started fresh, from the base net's weights when it has a base).
    `snapshot_keep` K asks the trainer to keep only its last K snapshots and the final one."""
    argv = [*train_command, str(net.solver)]
    snapshot = newest_solverstate(net)
    if snapshot is not None:
        argv += ["--snapshot", str(snapshot)]
    else:
        if net.weights is not None:
            check_base_weights(net)
            argv += ["--weights", str(net.weights)]
        if has_earlier_run(net):  # an attempt that died before its first snapshot: start over it
            argv += ["--force"]
    if device:
        argv += ["--device", device]
    if snapshot_keep is not None:
        argv += ["--snapshot-keep", str(snapshot_keep)]
    return argv, snapshot


@functools.lru_cache(maxsize=64)
def _supplied(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    """The layers a caffemodel supplies, read once per version of the file: parsing CaffeNet's
    244 MB takes ~0.8 s of CPU, and each of the paper's ten base nets is copied by 7 to 28 nets."""
    return frozenset(supplied_layers(load_caffemodel(path)))


def check_base_weights(net: PlannedNet) -> None:
    """The base net's final snapshot that `net` starts from exists and holds every layer the
    plan says `net` copies: a base that finished without one (its prototxt edited, a layer
    renamed) would leave that layer at its fillers, another experiment under `net`'s name."""
    assert net.weights is not None
    of_base = f"the final snapshot of base net {net.depends_on!r}"
    if not net.weights.is_file():
        raise ReplicateError(f"net {net.name!r}: starting weights {net.weights} not found ({of_base})")
    if not net.copies:
        return
    stat = net.weights.stat()
    supplied = _supplied(str(net.weights), stat.st_mtime_ns, stat.st_size)
    missing = [name for name in net.copies if name not in supplied]
    if missing:
        raise ReplicateError(
            f"net {net.name!r}: starting weights {net.weights} ({of_base}) lack the layer(s) {', '.join(missing)} "
            f"that the plan copies ({', '.join(net.copies)}); that base finished without them: train it again "
            "from its generated files")


def visible_gpu(gpu: str) -> str:
    """The CUDA_VISIBLE_DEVICES entry for `--gpus` id `gpu`: the ids number the GPUs this process
    sees, so inside a mask (a SLURM allocation, a shared node: CUDA_VISIBLE_DEVICES=2,3) id 0 is
    the mask's first entry, not the machine's GPU 0, which may be someone else's."""
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return gpu
    entries = [e.strip() for e in mask.split(",") if e.strip() and e.strip() != "-1"]
    if gpu in entries and not gpu.isdigit():  # a UUID or MIG name from the mask itself
        return gpu
    if not gpu.isdigit() or int(gpu) >= len(entries):
        seen = f"GPUs 0 to {len(entries) - 1}" if entries else "no GPU"
        raise ReplicateError(f"--gpus {gpu}: this process sees {seen} (CUDA_VISIBLE_DEVICES={mask}), and "
                             "the ids number those")
    return entries[int(gpu)]


def _child_env(gpu: str | None, cpus: CpuShare | None = None) -> dict[str, str]:
    """Run with this very package importable (the net's folder is the working directory) and,
    on a multi-GPU machine, with the one GPU the net was given (`visible_gpu`), and its share of
    the CPUs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible_gpu(gpu)
    return cpus.env(env) if cpus is not None else env


def error_line(net_dir: Path) -> str | None:
    """Why the trainer's last attempt failed, from the end of its train.out: its last `error: ...`
    line (a one-line error of the CLI, without that prefix), else its last line (a traceback's
    exception), never the CPU-time line a preloaded trainer ends with nor an earlier attempt's."""
    try:
        with open(net_dir / OUTPUT_FILE, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    start = max((i + 1 for i, line in enumerate(lines) if line.startswith(ATTEMPT)), default=0)
    lines = [line for line in lines[start:] if not line.startswith(CPU_TIME)]
    errors = [line[len(ERROR):] for line in lines if line.startswith(ERROR)]
    return errors[-1] if errors else lines[-1] if lines else None


@dataclass
class NetProcess:
    """A running trainer, with what its status record must keep."""

    net: PlannedNet
    process: subprocess.Popen[bytes] | PreloadedTrainer
    record: dict[str, Any]
    output: IO[bytes]
    #: metrics.jsonl's size when it started: what lies beyond was written by this attempt.
    metrics_size: int = 0
    stop_requested: bool = field(default=False)


def _ignore_usr2() -> None:
    """In the child before exec: SIGUSR2 (a scheduler's warning) must not kill a trainer that has
    not installed its handler yet, nor torchrun, which has none; the grid stops them with SIGTERM."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _before_exec(cpus: CpuShare | None) -> Callable[[], None]:
    """What the child does before exec: ignore SIGUSR2 and keep to its CPUs."""
    def prepare() -> None:
        _ignore_usr2()
        if cpus is not None:
            cpus.pin()
    return prepare


def launch(
    net: PlannedNet,
    *,
    device: str | None = None,
    gpu: str | None = None,
    train_command: Sequence[str] = TRAIN_COMMAND,
    job_id: str | None = None,
    snapshot_keep: int | None = None,
    cpus: CpuShare | None = None,
    stop_timeout_s: float = 120.0,
) -> NetProcess:
    """Start the trainer for `net` (in its own session, so a Ctrl-C reaches it only through
    the grid, which then stops it in order) and mark the net running.  `cpus`: its share of
    the node's CPUs when several trainers run at once (replicate.experiments.cpushare).
    `stop_timeout_s`: how long a trainer started but not yet handed back (see below) is given to
    stop when a signal interrupts this call."""
    argv, snapshot = train_argv(net, device, train_command, snapshot_keep)
    metrics_size = _metrics_size(net)
    output = open(net.dir / OUTPUT_FILE, "ab")
    output.write(f"{ATTEMPT}{netstate.now()} {' '.join(argv)}\n".encode())
    output.flush()
    try:
        process: subprocess.Popen[bytes] | PreloadedTrainer
        if device == "cpu" and gpu is None and tuple(train_command) == TRAIN_COMMAND and preload_usable():
            # Our own CPU trainer: forked from a server that has imported it (see preload).
            process = PreloadedTrainer(argv[len(TRAIN_COMMAND) - 1:], net.dir, _child_env(gpu, cpus),
                                       net.dir / OUTPUT_FILE, cpus=cpus.cpus if cpus else None)
        else:
            process = subprocess.Popen(
                argv, cwd=net.dir, env=_child_env(gpu, cpus), stdout=output, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_before_exec(cpus),
            )
    except OSError as err:
        output.close()
        raise ReplicateError(f"net {net.name!r}: cannot start {argv[0]} ({err.strerror})") from None
    record = {
        "net": net.name, "pid": process.pid, "started": netstate.now(), "command": argv,
        "resumed_from": str(snapshot) if snapshot else None, "gpu": gpu, "job_id": job_id,
        **({"cpus": cpus.describe()} if cpus is not None else {}),
    }
    proc = NetProcess(net=net, process=process, record=record, output=output, metrics_size=metrics_size)
    try:
        netstate.write_status(net.dir, netstate.RUNNING, **record)
    except BaseException:
        # A Ctrl-C (or a full disk) before the caller holds the trainer: its own session keeps
        # the terminal's Ctrl-C from it, so it would train on unsupervised.  Stop it here.
        stop([proc], stop_timeout_s)
        output.close()
        raise
    return proc


def stop(procs: Sequence[NetProcess], timeout: float) -> None:
    """Ask every trainer to stop as Caffe does on SIGINT (snapshot, then exit), all at once so
    they snapshot in parallel; kill those still running `timeout` seconds later.  One signal
    each: a second SIGINT could break off the snapshot being written."""
    for proc in procs:
        proc.stop_requested = True
        if proc.process.poll() is None:
            proc.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait()


def _metrics_size(net: PlannedNet) -> int:
    try:
        return (net.dir / METRICS_FILE).stat().st_size
    except FileNotFoundError:
        return 0


def stopped_for_requeue(proc: NetProcess, returncode: int) -> bool:
    """Whether the trainer stopped on a scheduler's signal (SIGTERM, SIGUSR2) after a snapshot:
    `train` exits EXIT_REQUEUE; under torchrun, which exits 1 when a process fails, the record
    this attempt wrote last says so."""
    if returncode == EXIT_REQUEUE:
        return True
    if returncode == 0 or _metrics_size(proc.net) <= proc.metrics_size:
        return False
    record = last_record(proc.net.dir)
    return record is not None and record.get("kind") == "stopped" and bool(record.get("requeue"))


def conclude(proc: NetProcess) -> dict[str, Any]:
    """Record how the exited trainer left the net: done, stopped (by us or by a scheduler's
    signal: resumable) or failed."""
    returncode = proc.process.wait()
    proc.output.close()
    record = {**proc.record, "pid": None, "ended": netstate.now(), "returncode": returncode}
    if is_finished(proc.net):
        return netstate.write_status(proc.net.dir, netstate.DONE, **record, error=None)
    if proc.stop_requested:
        return netstate.write_status(proc.net.dir, netstate.STOPPED, **record, error=None)
    if stopped_for_requeue(proc, returncode):
        return netstate.write_status(proc.net.dir, netstate.STOPPED, **record, error=None, requeue=True)
    if returncode == 0:
        error = "trainer exited with code 0 before max_iter (no final snapshot, no done record)"
    elif returncode < 0:  # its last line is whatever it was doing, not why it died
        error = f"trainer killed by {signal.Signals(-returncode).name}"
    else:
        error = error_line(proc.net.dir) or f"trainer exited with code {returncode}"
    error += f" (trainer output: {proc.net.dir / OUTPUT_FILE})"
    return netstate.write_status(proc.net.dir, netstate.FAILED, **record, error=error)

