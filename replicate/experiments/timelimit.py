"""How long each job asks SLURM for: a number of minutes, or a net's own need (`--time auto`),
never more than the partition or the job's QOS allows.

A job that reaches its time limit is not lost: SLURM sends USR2 before it, the trainer snapshots
and the job requeues and resumes (replicate.experiments.slurm).  So a limit shorter than a net's
run costs a requeue (a wait in the queue and a restart), never the run.  A limit longer than the
partition's MaxTime is worse: SLURM keeps such a job pending for ever (reason PartitionTimeLimit)
unless the site rejects it at submission, and so does a QOS's MaxWall (QOSMaxWallDurationPerJobLimit).
Every limit is therefore capped at the partition's MaxTime (as `sinfo` reports it) and at the MaxWall
of the QOS given with `--slurm-arg qos=NAME` (as `sacctmgr` reports it, where the site's accounting
answers; a QOS the jobs get by default is not looked up: a job past its MaxWall shows in
`grid status` with SLURM's reason and the fix, replicate.experiments.squeue).

`--time auto` asks, per job array, for what its slowest net still needs times a margin, plus a
few minutes of start-up.  A net's seconds per iteration come from its own train.log when it has
trained (the display lines' iter/s: wall time between displays, tests and snapshots included),
else from a `bench --out` JSON: the images per iteration of its train net (batch_size x
iter_size) over the end-to-end images/s at the trainer's precision (the synthetic step's when
there is no end-to-end figure: optimistic, since it reads no data), plus its test passes (the
JSON's test-pass rate, else the training rate, which overstates a forward-only pass).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replicate.errors import ReplicateError
from replicate.experiments.netfiles import last_iteration
from replicate.experiments.planfile import PlannedNet
from replicate.io.prototxt import read_net_text, read_solver_text
from replicate.proto import caffe_pb2

#: Minutes added to every estimate: imports, cuDNN autotuning or compiling, the data workers'
#: start, resuming from a snapshot, the final test and snapshot.
STARTUP_MIN = 5
#: How often slurmctld checks time limits; it sends a job's --signal up to this much earlier than
#: asked, so that the signal is never late (slurmctld's PERIODIC_TIMEOUT).
SLURM_CHECK_S = 30
#: The display lines of train.log a net's speed is taken from: the last ones, of its latest run.
SPEED_LINES = 50
_DISPLAY = re.compile(r"\] Iteration (\d+) \(([\d.e+-]+) iter/s, ([\d.e+-]+)s/(\d+) iters\)")
_DATA_FIELDS = ("data_param", "image_data_param", "hdf5_data_param", "window_data_param", "memory_data_param")


def slurm_minutes(text: str) -> int | None:
    """SLURM's time format (`[days-]hours:minutes:seconds`, `minutes:seconds`, `minutes`,
    `infinite`/`UNLIMITED`) in whole minutes, rounded down; None for no limit."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", ""):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = parts
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds // 60


def partition_limit(partition: str) -> int | None:
    """The partition's MaxTime in minutes, None when it has none or `sinfo` cannot say."""
    try:
        out = subprocess.run(["sinfo", "--noheader", "--partition", partition, "--format=%l"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:  # one line per partition and node state, each with the partition's limit
        limits = [m for m in map(slurm_minutes, out.stdout.split()) if m is not None]
    except ValueError:
        return None
    return min(limits, default=None)


def qos_limit(qos: str) -> int | None:
    """The QOS's MaxWall in minutes, None when it has none or `sacctmgr` cannot say (no
    accounting database: `accounting_storage/none`)."""
    try:
        out = subprocess.run(["sacctmgr", "--noheader", "--parsable2", "show", "qos", f"where name={qos}",
                              "format=MaxWall"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:
        limits = [m for m in map(slurm_minutes, out.stdout.split()) if m is not None]
    except ValueError:
        return None
    return min(limits, default=None)


def job_limit(partition: str, qos: str | None) -> tuple[int | None, str]:
    """The longest time limit a job may ask for, and what sets it: the partition's MaxTime or,
    where lower, the MaxWall of the QOS the jobs ask for."""
    limits = [(partition_limit(partition), "the partition's MaxTime")]
    if qos:
        limits.append((qos_limit(qos), f"QOS {qos}'s MaxWall"))
    known = [(m, name) for m, name in limits if m is not None]
    return min(known) if known else (None, "the partition's MaxTime")


def logged_seconds_per_iter(net_dir: Path) -> float | None:
    """Wall seconds per iteration over the last display lines of the net's latest run in
    train.log (None: no display line yet)."""
    try:
        with open(net_dir / "train.log", "rb") as f:
            f.seek(max(0, f.seek(0, 2) - (1 << 20)))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    lapses: list[tuple[int, float, int]] = []
    for match in _DISPLAY.finditer(tail):
        iteration, lapse, iters = int(match[1]), float(match[3]), int(match[4])
        if lapses and iteration <= lapses[-1][0]:
            lapses = []  # a new run started over an older one: its speed counts, not the old one's
        lapses.append((iteration, lapse, iters))
    lapses = lapses[-SPEED_LINES:]
    iterations = sum(i for _, _, i in lapses)
    return sum(s for _, s, _ in lapses) / iterations if iterations else None


def _phase_of(layer: caffe_pb2.LayerParameter) -> int | None:
    rules = [r.phase for r in layer.include if r.HasField("phase")]
    return rules[0] if rules else None


def _batch(net_file: Path, phase: int) -> int | None:
    """The batch size of the first data layer of `phase` (or of both phases) in a net file."""
    for layer in read_net_text(net_file).layer:
        if _phase_of(layer) in (None, phase):
            for name in _DATA_FIELDS:
                if layer.HasField(name) and getattr(layer, name).batch_size:
                    return getattr(layer, name).batch_size
    return None


@dataclass(frozen=True)
class NetWork:
    """The images one net's remaining run reads: training images per iteration, and test images
    per test pass with the interval between passes (0: no tests)."""

    train_images: int
    test_images: int
    test_interval: int


def net_work(net: PlannedNet) -> NetWork:
    solver = read_solver_text(net.solver)
    folder = net.solver.parent
    train_file = folder / (solver.net or solver.train_net)
    test_file = folder / (solver.net or (solver.test_net[0] if solver.test_net else ""))
    train = _batch(train_file, caffe_pb2.TRAIN) if (solver.net or solver.train_net) else None
    if not train:
        raise ReplicateError(f"{net.solver}: no data layer with a batch_size in its train net; cannot tell its "
                             "images per iteration (give --time in minutes)")
    test = _batch(test_file, caffe_pb2.TEST) if test_file != folder and solver.test_interval else None
    test_images = (test or 0) * (solver.test_iter[0] if solver.test_iter else 0)
    return NetWork(train * max(1, solver.iter_size), test_images, solver.test_interval if test_images else 0)


@dataclass(frozen=True)
class BenchSpeed:
    """Images per second from a `bench` JSON: training steps, and test passes when it timed one."""

    train: float
    test: float
    source: str


def bench_speed(path: str | Path, precision: str = "fp32") -> BenchSpeed:
    """The training rate `train` reaches at `precision` with its default settings (no
    channels_last, no compile): the end-to-end figure, else the synthetic step's."""
    try:
        report: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ReplicateError(f"{path}: not a bench JSON ({err})") from None
    def plain(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((r for r in rows if r.get("precision") == precision and not r.get("channels_last")
                     and not r.get("compile")), None)
    row, kind = plain(report.get("end_to_end", [])), "end to end"
    if row is None:
        row, kind = plain(report.get("step", [])), "synthetic step"
    if row is None:
        raise ReplicateError(f"{path}: no {precision} step without channels_last and compile; run "
                             f"`bench --precision {precision}` (with --view for an end-to-end figure)")
    test = next((r for r in report.get("test_pass", []) if r.get("precision") == precision), None)
    where = f"{path}: {report.get('device_name', '?')}, {precision} {kind}"
    return BenchSpeed(row["images_per_s"], test["images_per_s"] if test else row["images_per_s"], where)


def seconds_left(net: PlannedNet, bench: BenchSpeed | None) -> tuple[float, str]:
    """The wall seconds `net` still needs to train, and where its speed came from."""
    left = net.max_iter - min(last_iteration(net.dir) or 0, net.max_iter)
    measured = logged_seconds_per_iter(net.dir)
    if measured is not None:
        return left * measured, f"{measured:.3g} s/iteration from its train.log"
    if bench is None:
        raise ReplicateError(f"net {net.name!r} has not trained yet, so its speed is unknown: pass --speed-from "
                             "a `bench --out` JSON, or a --time in minutes")
    work = net_work(net)
    tests = left // work.test_interval if work.test_interval else 0
    return (left * work.train_images / bench.train + tests * work.test_images / bench.test,
            f"{work.train_images} images/iteration at {bench.train:,.0f} images/s ({bench.source})")


class TimeLimits:
    """The time limit of each job array `grid submit` queues (see the module doc)."""

    def __init__(self, minutes: int | None, partition_max: int | None, *, bench: BenchSpeed | None = None,
                 margin: float = 1.25, signal_delay_s: int = 120, max_requeues: int = 20,
                 limit_name: str = "the partition's MaxTime") -> None:
        """`partition_max`: the longest limit a job may ask for (see `job_limit`), `limit_name`
        what sets it, as the reasons printed name it."""
        if minutes is not None and minutes < 1:
            raise ReplicateError(f"--time must be at least 1 minute, not {minutes}")
        if margin < 1:
            raise ReplicateError(f"--time-margin must be at least 1, not {margin}")
        self.minutes, self.partition_max, self.bench, self.margin = minutes, partition_max, bench, margin
        self.signal_delay_s, self.max_requeues, self.limit_name = signal_delay_s, max_requeues, limit_name
        if minutes is not None:
            self._check_signal(self.capped(minutes))

    def capped(self, minutes: int) -> int:
        return min(minutes, self.partition_max) if self.partition_max else minutes

    def trains_s(self, minutes: int) -> int:
        """The seconds a job of `minutes` surely trains before SLURM's signal stops it."""
        return minutes * 60 - self.signal_delay_s - SLURM_CHECK_S

    def _check_signal(self, minutes: int) -> None:
        if self.trains_s(minutes) <= 0:
            raise ReplicateError(f"a {minutes}-minute time limit leaves no time to train: SLURM signals up to "
                                 f"--signal-delay {self.signal_delay_s} s + {SLURM_CHECK_S} s before it, and every "
                                 "job would be stopped as it starts")

    def _requeues(self, need: int, minutes: int, net: str, limit: str) -> int:
        """The requeues a net that needs `need` minutes takes in jobs of `minutes` (each trains
        until SLURM's signal, then requeues); more than --max-requeues is an error now, rather
        than a job that fails once they run out, its dependants cancelled."""
        requeues = math.ceil(need * 60 / self.trains_s(minutes)) - 1
        if requeues > self.max_requeues:
            raise ReplicateError(f"{net} needs ~{need} min but {limit} is {minutes}: ~{requeues} requeues, more "
                                 f"than --max-requeues {self.max_requeues}")
        return requeues

    def __call__(self, group: Sequence[PlannedNet]) -> tuple[int, str]:
        """Minutes for a job array of `group`, and why."""
        if self.minutes is not None:
            minutes = self.capped(self.minutes)
            why = f"{minutes} min" + (f" ({self.limit_name}; asked {self.minutes})" if minutes < self.minutes else "")
            known = [(seconds_left(net, None), net) for net in group if logged_seconds_per_iter(net.dir) is not None]
            if known:  # nets that have trained say how long they need; the others cannot
                (seconds, _), slowest = max(known, key=lambda e: e[0][0])
                need = math.ceil(seconds * self.margin / 60) + STARTUP_MIN
                if need > minutes:
                    requeues = self._requeues(need, minutes, slowest.name, "--time")
                    why += f": ~{requeues} requeue(s) for {slowest.name}"
            return minutes, why
        estimates = [(seconds_left(net, self.bench), net) for net in group]
        (seconds, how), slowest = max(estimates, key=lambda e: e[0][0])
        need = math.ceil(seconds * self.margin / 60) + STARTUP_MIN
        minutes = self.capped(need)
        self._check_signal(minutes)
        why = f"{minutes} min for {slowest.name} ({seconds / 3600:.2f} h left at {how}, x{self.margin:g} + {STARTUP_MIN} min)"
        if minutes < need:
            requeues = self._requeues(need, minutes, slowest.name, self.limit_name)
            why += f", capped at {self.limit_name}: ~{requeues} requeue(s)"
        return minutes, why
