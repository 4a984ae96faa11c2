"""Run a plan on this machine: one net per GPU at a time, or one after another on the CPU.

Base nets go first (their dependants wait for their final weights); nets with no base (netbase,
reduced, nolearn) fill the free slots in plan order.  Everything is decided from the net
folders, so running the same plan again continues it: finished nets are skipped, stopped or
crashed ones resume from their newest solver state, the rest start fresh.  A net whose base
failed is marked `blocked` with the reason, never left silently undone.  Ctrl-C (or SIGTERM)
stops every trainer the way Caffe stops on SIGINT and records them as `stopped`; a trainer
stopped by a signal this run did not send resumes (up to `RESTARTS` times), so that its
dependants are not stranded, and a net whose base did not finish ends the run `waiting`.
"""

from __future__ import annotations

import fcntl
import time
from typing import Callable, Sequence

from replicate.errors import ReplicateError
from replicate.experiments import netstate
from replicate.experiments.cpushare import cpu_shares
from replicate.experiments.launch import TRAIN_COMMAND, NetProcess, conclude, launch, stop, visible_gpu
from replicate.eta import eta_text
from replicate.experiments.netfiles import is_finished, last_iteration
from replicate.experiments.planfile import Plan, PlannedNet

LOCK_FILE = ".grid-run.lock"
#: How often one run restarts a net whose trainer stopped on a signal it did not send (a stray
#: SIGTERM); the net resumes from its snapshot each time.  A net that keeps stopping is left
#: stopped, its dependants waiting, for the next `grid run`.
RESTARTS = 3
#: The state a net ends a run in when its base did not finish in it (a base left stopped).
WAITING = "waiting"


class GridRunner:
    """Runs the nets of `plan` (only those in `only` and what they depend on, when given).

    `gpus` lists GPU ids (one net per GPU, each trainer seeing only its own through
    CUDA_VISIBLE_DEVICES, `--device cuda`); without GPUs `jobs` nets run at a time on `device`.
    Each slot's trainer gets its share of this process's CPUs (replicate.experiments.cpushare).
    `train_command` is the trainer's command line before its arguments (see
    replicate.experiments.launch).  `report` receives one line per event and a progress line
    every `progress_s` seconds.  `snapshot_keep` is passed to each trainer (see launch.train_argv)."""

    def __init__(
        self,
        plan: Plan,
        *,
        only: Sequence[str] = (),
        device: str | None = None,
        gpus: Sequence[str] = (),
        jobs: int = 1,
        train_command: Sequence[str] = TRAIN_COMMAND,
        report: Callable[[str], None] = print,
        poll_s: float = 0.5,
        progress_s: float = 60.0,
        stop_timeout_s: float = 120.0,
        snapshot_keep: int | None = None,
    ) -> None:
        if jobs < 1:
            raise ReplicateError(f"--jobs must be at least 1, not {jobs}")
        if gpus and jobs != 1:
            raise ReplicateError("--jobs is for CPU runs; with --gpus each GPU id is one slot")
        if gpus and device not in (None, "cuda"):
            raise ReplicateError(f"--gpus runs every net on a GPU, but --device is {device!r}")
        for gpu in gpus:
            visible_gpu(gpu)  # an id this process cannot see is said now, not by each trainer
        self.plan = plan
        order = plan.ordered()
        wanted = {n.name for n in plan.with_dependencies(list(only))} if only else None
        self.nets = [n for n in order if wanted is None or n.name in wanted]
        self.device = "cuda" if gpus else device
        self.slots: list[str | None] = list(gpus) if gpus else [None] * jobs
        self.cpu_shares = cpu_shares(len(self.slots))
        self.train_command = list(train_command)
        self.report = report
        self.poll_s = poll_s
        self.progress_s = progress_s
        self.stop_timeout_s = stop_timeout_s
        self.snapshot_keep = snapshot_keep
        self.states: dict[str, str] = {}
        self._restarts: dict[str, int] = {}
        self._started, self._trained_at_start = time.monotonic(), 0

    def _count(self) -> str:
        done = sum(state == netstate.DONE for state in self.states.values())
        return f"[{done}/{len(self.nets)} done]"

    def _fail(self, net: PlannedNet, error: str, recorded: bool = False) -> None:
        """Mark `net` failed (`recorded`: its status.json says so already) and block every net
        that needs it."""
        if not recorded:
            netstate.write_status(net.dir, netstate.FAILED, net=net.name, ended=netstate.now(), error=error)
        self.states[net.name] = netstate.FAILED
        self.report(f"{self._count()} {net.name}: failed: {error}")
        for dependant in self.plan.dependants(net.name):
            if dependant in self.nets and dependant.name not in self.states:
                reason = f"base net {net.name!r} failed: {error}"
                netstate.write_status(dependant.dir, netstate.BLOCKED, net=dependant.name, error=reason)
                self.states[dependant.name] = netstate.BLOCKED
                self.report(f"{self._count()} {dependant.name}: blocked: {reason}")

    def _next_ready(self) -> PlannedNet | None:
        for net in self.nets:
            if net.name in self.states:
                continue
            if net.depends_on is None or self.states.get(net.depends_on) == netstate.DONE:
                return net
        return None

    def _start(self, net: PlannedNet, slot: int, running: dict[int, NetProcess]) -> None:
        """Start `net` in `slot`, into `running` as soon as `launch` returns (no statement between:
        a Ctrl-C after it finds the trainer there, and stops it with the others)."""
        self.states[net.name] = netstate.RUNNING
        gpu = self.slots[slot]
        try:
            running[slot] = proc = launch(net, device=self.device, gpu=gpu, train_command=self.train_command,
                                          snapshot_keep=self.snapshot_keep, cpus=self.cpu_shares[slot],
                                          stop_timeout_s=self.stop_timeout_s)
        except ReplicateError as err:
            self._fail(net, str(err))
            return
        how = f"resuming from {proc.record['resumed_from']}" if proc.record["resumed_from"] else "fresh"
        where = f" on GPU {gpu}" if gpu is not None else ""
        self.report(f"{self._count()} {net.name}: started{where}, {how}")

    def _finish(self, proc: NetProcess) -> None:
        record = conclude(proc)
        name = proc.net.name
        if record["state"] == netstate.FAILED:
            self._fail(proc.net, record["error"], recorded=True)
        elif record["state"] == netstate.STOPPED and not proc.stop_requested and (
                restarts := self._restarts.get(name, 0)) < RESTARTS:
            # A signal from outside this run (this run's own stops set stop_requested): the net
            # goes back in line and resumes from its snapshot, so its dependants are not stranded.
            self._restarts[name] = restarts + 1
            del self.states[name]
            self.report(f"{self._count()} {name}: stopped by a signal this run did not send; "
                        f"it resumes from its snapshot ({restarts + 1} of {RESTARTS} restarts)")
        else:
            self.states[name] = record["state"]
            self.report(f"{self._count()} {name}: {record['state']}")

    def _latest(self) -> dict[str, int | None]:
        """Each net's iteration as its files say (None: no record yet); a finished net's max_iter."""
        return {
            net.name: net.max_iter if self.states.get(net.name) == netstate.DONE else last_iteration(net.dir)
            for net in self.nets
        }

    def _trained(self, latest: dict[str, int | None]) -> int:
        return sum(min(latest[net.name] or 0, net.max_iter) for net in self.nets)

    def _progress(self, running: dict[int, NetProcess]) -> None:
        """Nets and iterations done, the rate since this run started, the time left, and where
        each running net stands ("starting" until its first record)."""
        latest = self._latest()
        done, total = self._trained(latest), sum(net.max_iter for net in self.nets)
        left = sum(net.max_iter - min(latest[net.name] or 0, net.max_iter) for net in self.nets
                   if self.states.get(net.name) not in (netstate.FAILED, netstate.BLOCKED))
        elapsed = time.monotonic() - self._started
        rate = max(done - self._trained_at_start, 0) / elapsed if elapsed > 0 else 0.0
        parts = [
            f"{p.net.name} starting" if latest[p.net.name] is None
            else f"{p.net.name} {latest[p.net.name]}/{p.net.max_iter}"
            for p in running.values()
        ]
        self.report(f"{self._count()} {done:,}/{total:,} iterations, {rate:.1f} it/s so far, "
                    f"ETA {eta_text(left, rate)}; running: {', '.join(parts) or 'none'}")

    def run(self) -> dict[str, str]:
        """Run until every net is done, failed or blocked; the final state of each net.

        One runner per plan at a time (a lock file next to the plan): two would train the
        same nets into the same folders."""
        lock_path = self.plan.path.parent / LOCK_FILE
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReplicateError(f"{lock_path}: another `grid run` is running this plan") from None
            return self._run()

    def _run(self) -> dict[str, str]:
        alive = [
            f"{net.name} (pid {record['pid']})"
            for net in self.nets
            if (record := netstate.read_status(net.dir)).get("state") == netstate.RUNNING
            and netstate.process_alive(record)
        ]
        if alive:
            raise ReplicateError(f"still being trained by an earlier run: {', '.join(alive)}; stop or await it")
        for net in self.nets:
            if is_finished(net):
                self.states[net.name] = netstate.DONE
                if netstate.read_status(net.dir).get("state") != netstate.DONE:
                    netstate.write_status(net.dir, netstate.DONE, net=net.name, ended=netstate.now())
        self.report(f"{self._count()} {len(self.nets) - len(self.states)} nets to train")
        self._started, self._trained_at_start = time.monotonic(), self._trained(self._latest())
        running: dict[int, NetProcess] = {}
        last_progress = time.monotonic()
        try:
            while True:
                for slot in range(len(self.slots)):
                    while slot not in running and (net := self._next_ready()) is not None:
                        self._start(net, slot, running)
                for slot, proc in list(running.items()):
                    if proc.process.poll() is not None:
                        del running[slot]
                        self._finish(proc)
                if not running and self._next_ready() is None:
                    break
                if time.monotonic() - last_progress >= self.progress_s:
                    self._progress(running)
                    last_progress = time.monotonic()
                time.sleep(self.poll_s)
        except BaseException:  # Ctrl-C, SIGTERM (see the CLI) or a bug: no trainer left behind
            self.report(f"stopping {len(running)} trainer(s)")
            stop(list(running.values()), self.stop_timeout_s)
            for proc in running.values():
                self._finish(proc)
            raise
        return {net.name: self.states.get(net.name, WAITING) for net in self.nets}
