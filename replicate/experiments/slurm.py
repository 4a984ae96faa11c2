"""Submit a plan to SLURM through submitit: arrays of independent nets, dependants after their base.

Every net is one job of one picklable callable (`TrainNet`) with its own submitit folder
(`<runs>/submitit/<job id>`).  Nets with nothing to wait for go out as one job array; the
dependants of each base go out as an array held by `afterok:<base job>` (and cancelled by SLURM
if the base fails), so the whole grid is queued at once and the scheduler does the ordering.
Before the time limit SLURM sends SIGUSR2 (`--signal=USR2@120`) to the job's processes: submitit
calls `TrainNet.checkpoint`, which stops the trainer (SIGTERM: it finishes the update, snapshots
and exits 75) and requeues the same call.  On preemption, `scontrol requeue` and `scancel` SLURM
sends SIGTERM itself: the trainer snapshots and exits 75, the job exits 75 too (no result), and
SLURM requeues or cancels it as it decided; a cluster with `RequeueExit=75` also requeues a job
whose trainer alone was signalled.  Every call decides how to start from the net's folder, so a
requeued job resumes from the newest solver state, bit for bit (its resume sidecar).

Each job asks for what one net needs: `gpus_per_net` GPUs (several: one torchrun process per GPU
inside the job), CPU cores for the data workers and host memory, so that a cluster's defaults
(often 1 core and a share of memory) do not starve it.  What a site requires besides (an
account, a QOS, a constraint, a typed GRES, mail) goes into every job of every array as
`slurm_args` (`grid submit --slurm-arg KEY=VALUE`); a GPU request among them (`gres=gpu:h100:1`,
`gpus-per-node`, ...) replaces the plain `--gpus-per-node`.  For executors without dependencies
(submitit's local executor) dependants are submitted once their base job has succeeded.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from replicate.errors import ReplicateError
from replicate.experiments import netstate
from replicate.experiments.launch import (PACKAGE_ROOT, TRAIN_COMMAND, NetProcess, check_base_weights, conclude,
                                          launch)
from replicate.experiments.netfiles import is_finished, newest_solverstate
from replicate.experiments.planfile import Plan, PlannedNet
from replicate.experiments.squeue import pending_note, queued_jobs
from replicate.solver.requests import EXIT_REQUEUE

SUBMITIT_FOLDER = "submitit"
#: A cancelled job has its trainer's stop timeout to end, and this much more (its job's own
#: teardown), before `grid submit` gives up queuing its replacement; and how often it looks.
CANCEL_MARGIN_S, CANCEL_POLL_S = 60.0, 2.0


def _job_id() -> str | None:
    try:
        return submitit.JobEnvironment().job_id
    except RuntimeError:  # not inside a submitit job
        return None


class TrainNet(submitit.helpers.Checkpointable):
    """Train one net to the end; safe to call again on the same net (finished: nothing to do,
    stopped: resumed with --snapshot).  Raises when training fails, so that the job fails and
    its dependants' `afterok` is never met; exits 75 (no result) when a scheduler's signal
    stopped the trainer, for SLURM to requeue or cancel the job as it decided."""

    def __init__(self, device: str | None = "cuda", train_command: Sequence[str] = TRAIN_COMMAND,
                 stop_timeout_s: float = 90.0, snapshot_keep: int | None = None) -> None:
        self.device = device
        self.snapshot_keep = snapshot_keep
        self.train_command = list(train_command)
        self.stop_timeout_s = stop_timeout_s
        self._proc: NetProcess | None = None
        self._exited: threading.Event | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proc": None, "_exited": None}

    def __call__(self, net: PlannedNet) -> str:
        if is_finished(net):
            netstate.write_status(net.dir, netstate.DONE, net=net.name, ended=netstate.now())
            return netstate.DONE
        try:
            self._proc = launch(net, device=self.device, train_command=self.train_command, job_id=_job_id(),
                                snapshot_keep=self.snapshot_keep, stop_timeout_s=self.stop_timeout_s)
        except ReplicateError as err:  # e.g. its base's final snapshot lacks layers it copies
            netstate.write_status(net.dir, netstate.FAILED, net=net.name, job_id=_job_id(), ended=netstate.now(),
                                  error=str(err))
            raise
        # A thread reaps the trainer: submitit calls checkpoint() in a signal handler on this
        # thread, where waiting on the child again would deadlock on Popen's waitpid lock.
        self._exited = threading.Event()
        threading.Thread(target=_reap, args=(self._proc, self._exited), daemon=True).start()
        try:
            while not self._exited.wait(1.0):
                pass
        finally:
            proc, self._proc = self._proc, None
            if proc is not None:  # None: checkpoint() already stopped and recorded it
                record = conclude(proc)
        if record.get("requeue"):
            raise SystemExit(EXIT_REQUEUE)
        if record["state"] != netstate.DONE:
            raise ReplicateError(f"net {net.name!r} {record['state']}: {record['error']}")
        return netstate.DONE

    def checkpoint(self, net: PlannedNet) -> submitit.helpers.DelayedSubmission:
        """Stop the trainer (on SIGTERM it finishes the update and snapshots; torchrun passes
        SIGTERM on to its processes) and requeue the same call, which resumes from that snapshot."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop_requested = True
            proc.process.send_signal(signal.SIGTERM)
            if not self._exited.wait(self.stop_timeout_s):
                proc.process.kill()
                self._exited.wait()
            record = conclude(proc)
            if record["state"] == netstate.STOPPED:
                netstate.write_status(net.dir, netstate.QUEUED, net=net.name, job_id=record["job_id"],
                                      note="requeued after the time limit or preemption")
        return submitit.helpers.DelayedSubmission(self, net)


def _reap(proc: NetProcess, exited: threading.Event) -> None:
    proc.process.wait()
    exited.set()


#: Per GPU of a net: a core for the training process and 9 for the data workers it then starts
#: (replicate.data.pool.workers_per_process sizes them from SLURM_CPUS_PER_TASK), and the host
#: memory they take with room to spare (an estimate, not a measurement: ~0.6 GB per worker, a few
#: GB for the trainer's CUDA context, pinned batches and a snapshot's host copy).  A CPU net gets
#: the same.
CPUS_PER_GPU, MEM_GB_PER_GPU = 10, 16

#: sbatch options the grid sets itself: the option of `grid submit` that sets each, or None.
MANAGED = {"partition": "--slurm-partition", "time": "--time", "signal": "--signal-delay",
           "cpus-per-task": "--cpus-per-task", "mem": "--mem-gb", "array": "--array-parallelism",
           "dependency": None, "kill-on-invalid-dep": None, "job-name": None, "output": None, "error": None,
           "open-mode": None, "nodes": None, "ntasks-per-node": None, "ntasks": None, "wrap": None}
#: Site options that ask for GPUs in their own way, and the defaults each replaces.
GPU_OPTIONS = ("gres", "gpus", "gpus-per-node", "gpus-per-task")
CPU_OPTIONS, MEM_OPTIONS = ("cpus-per-gpu",), ("mem-per-cpu", "mem-per-gpu")


def parse_slurm_args(values: Sequence[str]) -> dict[str, str | bool]:
    """`KEY=VALUE` (or a bare `KEY` for a flag such as `exclusive`) per sbatch option, the key
    as sbatch spells it without its dashes (`account`, `qos`, `constraint`, `gres`,
    `mail-type`); options the grid sets itself are refused with the option to use instead."""
    args: dict[str, str | bool] = {}
    for value in values:
        key, has_value, setting = value.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key) or (has_value and not setting):
            raise ReplicateError(f"--slurm-arg {value!r}: expected KEY=VALUE (e.g. account=myproject) or a flag KEY")
        if key in MANAGED:
            use = f"use {MANAGED[key]}" if MANAGED[key] else "the grid sets it for each job"
            raise ReplicateError(f"--slurm-arg {key}: {use}")
        if key in args:
            raise ReplicateError(f"--slurm-arg {key} given twice")
        args[key] = setting if has_value else True
    return args


def _gres_gpus(slurm_args: Mapping[str, str | bool]) -> int | None:
    """The GPUs a site's `gres` asks for per node (`gpu:2`, `gpu:h100:2`, `gpu`), or None."""
    gres = slurm_args.get("gres")
    for item in str(gres).split(",") if isinstance(gres, str) else ():
        parts = item.split(":")
        if parts[0] == "gpu":
            return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return None


def make_executor(
    plan: Plan,
    *,
    partition: str,
    time_min: int = 4320,
    gpus_per_net: int = 1,
    cpus_per_task: int | None = None,
    mem_gb: float | None = None,
    array_parallelism: int = 256,
    signal_delay_s: int = 120,
    max_requeues: int = 20,
    slurm_args: Mapping[str, str | bool] | None = None,
) -> submitit.AutoExecutor:
    """A SLURM executor writing each job's files under `<runs>/submitit/<job id>`; the jobs
    import this very package (PYTHONPATH), whether it is installed or not.  Each job asks for
    `gpus_per_net` GPUs (0: a CPU net), `cpus_per_task` cores and `mem_gb` of memory, by default
    CPUS_PER_GPU and MEM_GB_PER_GPU for each GPU, unless the site's `slurm_args` (the same that
    submit_plan is given) ask for GPUs, cores or memory their own way."""
    if gpus_per_net < 0:
        raise ReplicateError(f"--gpus-per-net must be 0 (CPU) or more, not {gpus_per_net}")
    if signal_delay_s < 1:
        raise ReplicateError(f"--signal-delay must be at least 1 second, not {signal_delay_s}")
    site = dict(slurm_args or {})
    gres = _gres_gpus(site)
    if gres is not None and gres != gpus_per_net:
        raise ReplicateError(f"--slurm-arg gres={site['gres']} asks for {gres} GPU(s) per job but --gpus-per-net "
                             f"is {gpus_per_net}: the trainer would use {gpus_per_net}")
    own_gpus = not any(key in site for key in GPU_OPTIONS if key != "gres") and gres is None
    share = max(1, gpus_per_net)
    try:
        executor = submitit.AutoExecutor(
            folder=plan.path.parent / SUBMITIT_FOLDER / "%j", cluster="slurm", slurm_max_num_timeout=max_requeues
        )
    except RuntimeError:  # submitit found no `srun`
        raise ReplicateError("no SLURM here (`srun` is not on PATH): submit from a SLURM login node") from None
    executor.update_parameters(
        timeout_min=time_min,
        gpus_per_node=(gpus_per_net or None) if own_gpus else None,
        cpus_per_task=None if any(k in site for k in CPU_OPTIONS) else cpus_per_task or CPUS_PER_GPU * share,
        mem_gb=None if any(k in site for k in MEM_OPTIONS) else mem_gb or MEM_GB_PER_GPU * share,
        slurm_partition=partition,
        slurm_array_parallelism=array_parallelism,
        slurm_signal_delay_s=signal_delay_s,
        slurm_setup=[f"export PYTHONPATH={PACKAGE_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
    )
    return executor


def _groups(nets: list[PlannedNet], finished: set[str]) -> dict[str | None, list[PlannedNet]]:
    """Nets keyed by the base they must wait for (None: nothing), bases' groups first."""
    groups: dict[str | None, list[PlannedNet]] = {}
    for net in nets:
        base = net.depends_on if net.depends_on not in finished else None
        groups.setdefault(base, []).append(net)
    return groups


def submit_plan(
    plan: Plan,
    executor: submitit.Executor,
    *,
    only: Sequence[str] = (),
    device: str | None = "cuda",
    train_command: Sequence[str] = TRAIN_COMMAND,
    resubmit: bool = False,
    stop_timeout_s: float = 90.0,
    report: Callable[[str], None] = print,
    snapshot_keep: int | None = None,
    slurm_args: Mapping[str, str | bool] | None = None,
    time_limit: Callable[[Sequence[PlannedNet]], tuple[int, str]] | None = None,
) -> dict[str, submitit.Job | str]:
    """Queue every unfinished net of `plan` (only those in `only` and what they depend on, when
    given) on `executor` (make_executor's SLURM one, or e.g. submitit's LocalExecutor); the job
    of each net, or the id of the job an earlier submission queued for it, kept while that job
    is in SLURM's queue (pending, running or requeued; elsewhere: while the net's status says
    queued or running): submitting twice must not train a net twice.  A job is replaced (and
    cancelled) when `resubmit` asks for it or when the base job it waits for is replaced.
    Every job of every array carries the site's `slurm_args` (see parse_slurm_args); each
    array's time limit is `time_limit(its nets)` (minutes and why; None: the executor's)."""
    nets = plan.with_dependencies(list(only)) if only else plan.nets
    nets = [n for n in plan.ordered() if n in nets]
    finished = {n.name for n in nets if is_finished(n)}
    queued = queued_jobs() if _is_slurm(executor) else None
    jobs: dict[str, submitit.Job | str] = {}
    todo: list[PlannedNet] = []
    stale: list[str] = []
    for net in nets:
        record = netstate.read_status(net.dir)
        if net.name in finished:
            continue
        job_id = record.get("job_id")
        if queued is not None:
            waiting = job_id in queued
        else:
            waiting = bool(job_id) and record.get("state") in (netstate.QUEUED, netstate.RUNNING)
        # A job waiting for a base job that is being replaced would wait forever (afterok).
        if waiting and not resubmit and net.depends_on not in {n.name for n in todo}:
            jobs[net.name] = job_id
            pending = pending_note(queued.get(job_id, "")) if queued is not None else ""
            report(f"{net.name}: already queued as job {job_id}" + (f", {pending}" if pending else ""))
            continue
        if waiting and queued is not None:
            stale.append(job_id)
        todo.append(net)
    blocked = _unstartable(todo, finished, report)
    todo = [net for net in todo if net.name not in blocked]
    groups = _groups(todo, finished)
    # Every array's limit before anything is queued or cancelled: a net without a known speed
    # must not leave the grid half submitted.
    limits = {base: time_limit(group) for base, group in groups.items()} if time_limit is not None else {}
    if stale:  # never two jobs training one net
        _cancel(stale, stop_timeout_s + CANCEL_MARGIN_S)
        report(f"cancelled job(s) {', '.join(stale)}: their nets are queued anew")
    trainer = TrainNet(device=device, train_command=train_command, stop_timeout_s=stop_timeout_s,
                       snapshot_keep=snapshot_keep)
    for base, group in groups.items():
        extra: dict[str, str] = {}
        if base is not None:
            reason = blocked.get(base) or _wait_if_needed(executor, plan.net(base), jobs[base])
            if reason:
                for net in group:
                    blocked[net.name] = reason
                    netstate.write_status(net.dir, netstate.BLOCKED, net=net.name, error=reason)
                    report(f"{net.name}: blocked: {reason}")
                continue
            if _is_slurm(executor):
                extra = {"dependency": f"afterok:{_id(jobs[base])}", "kill-on-invalid-dep": "yes"}
        if _is_slurm(executor):
            executor.update_parameters(name=f"grid-after-{base}" if base else "grid",
                                       slurm_additional_parameters={**(slurm_args or {}), **extra})
        limit = ""
        if base in limits:
            minutes, why = limits[base]
            executor.update_parameters(timeout_min=minutes)
            limit = f"; time limit {why}"
        # Recorded as queued before submitting, and given the job id after only if the job has
        # not started yet: a job that starts at once writes its own record first.  (A cancelled
        # job it replaces has ended by now, its last record written: see _cancel.)
        before = {net.name: netstate.write_status(net.dir, netstate.QUEUED, net=net.name) for net in group}
        try:
            submitted = executor.map_array(trainer, group)
        except (FailedJobError, FailedSubmissionError) as err:
            for net in group:  # not queued after all
                netstate.write_status(net.dir, netstate.FAILED, net=net.name, error=f"not submitted: {err}")
            raise ReplicateError(
                f"submitting {', '.join(n.name for n in group)} failed ({str(err).strip().splitlines()[-1]}); "
                f"{len(jobs)} net(s) were queued before and stay queued"
            ) from None
        for net, job in zip(group, submitted):
            jobs[net.name] = job
            if netstate.read_status(net.dir) == before[net.name]:
                netstate.write_status(net.dir, netstate.QUEUED, net=net.name, job_id=job.job_id,
                                      folder=str(job.paths.folder), submitted=netstate.now())
        after = f" after job {_id(jobs[base])}" if base else ""
        report(f"queued {len(group)} net(s){after}: {', '.join(n.name for n in group)}{limit}")
    return jobs


def _unstartable(todo: list[PlannedNet], finished: set[str], report: Callable[[str], None]) -> dict[str, str]:
    """Nets whose base has finished, checked now rather than in a job (launch.check_base_weights):
    each that cannot start is failed with its reason, and the nets that need it are blocked; why,
    by net name."""
    why: dict[str, str] = {}
    for net in todo:
        if net.depends_on in why:
            why[net.name] = why[net.depends_on]
            netstate.write_status(net.dir, netstate.BLOCKED, net=net.name, error=why[net.name])
            report(f"{net.name}: blocked: {why[net.name]}")
        elif net.depends_on in finished and net.weights is not None and newest_solverstate(net) is None:
            try:
                check_base_weights(net)
            except ReplicateError as err:
                netstate.write_status(net.dir, netstate.FAILED, net=net.name, ended=netstate.now(), error=str(err))
                report(f"{net.name}: failed: {err}")
                why[net.name] = f"base net {net.name!r} failed: {err}"
    return why


def _cancel(jobs: Sequence[str], wait_s: float) -> None:
    """scancel `jobs` and wait until they have left SLURM's queue: a cancelled job's trainer first
    snapshots (up to its stop timeout) and records its net as stopped, and a replacement queued
    before that would find its own record overwritten (its job id lost, so the next `grid
    submit` queues the net a second time) and the folder still locked by the old trainer.
    Nothing new is queued if they do not end in `wait_s`."""
    try:
        out = subprocess.run(["scancel", *jobs], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ReplicateError(f"cannot cancel job(s) {', '.join(jobs)} (scancel: {err}); nothing new was queued") from None
    if out.returncode != 0:
        raise ReplicateError(f"cannot cancel job(s) {', '.join(jobs)}: {out.stderr.strip() or 'scancel failed'}; "
                             "nothing new was queued")
    deadline = time.monotonic() + wait_s
    while left := sorted(set(jobs) & queued_jobs().keys()):
        if time.monotonic() > deadline:
            raise ReplicateError(f"job(s) {', '.join(left)} still in SLURM's queue {wait_s:.0f} s after scancel; "
                                 "nothing new was queued: run the same command again once they have ended")
        time.sleep(CANCEL_POLL_S)


def _id(job: submitit.Job | str) -> str:
    return job if isinstance(job, str) else job.job_id


def _is_slurm(executor: submitit.Executor) -> bool:
    return getattr(executor, "cluster", None) == "slurm"


def _wait_if_needed(executor: submitit.Executor, base: PlannedNet, job: submitit.Job | str) -> str | None:
    """On an executor without job dependencies, wait for the base job; why its dependants
    cannot start, or None.  SLURM waits by itself (afterok)."""
    if _is_slurm(executor):
        return None
    if isinstance(job, str):
        raise ReplicateError(
            f"net {base.name!r} was queued earlier as job {job}; only SLURM can make its dependants "
            "wait for it (or pass --resubmit)"
        )
    try:
        job.result()
    except Exception as err:  # the job failed; its own record holds the trainer's error
        error = netstate.read_status(base.dir).get("error") or str(err).strip().splitlines()[0]
        return f"base net {base.name!r} failed: {error}"
    return None
