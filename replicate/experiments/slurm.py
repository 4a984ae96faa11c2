"""Submit a plan to SLURM through submitit: arrays of independent nets, dependants after their base.

Every net is one job of one picklable callable (`TrainNet`) with its own submitit folder
(`<runs>/submitit/<job id>`).  Nets with nothing to wait for go out as one job array; the
dependants of each base go out as an array held by `afterok:<base job>` (and cancelled by SLURM
if the base fails), so the whole grid is queued at once and the scheduler does the ordering.
At the time limit (or on preemption) submitit signals the job; `TrainNet.checkpoint` stops the
trainer the way Caffe stops on SIGINT and requeues the same call, which resumes from the newest
solver state because every call decides how to start from the net's folder.  For executors
without dependencies (submitit's local executor) dependants are submitted once their base job
has succeeded.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable, Sequence

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from replicate.errors import ReplicateError
from replicate.experiments import netstate
from replicate.experiments.launch import PACKAGE_ROOT, TRAIN_COMMAND, NetProcess, conclude, launch
from replicate.experiments.netfiles import is_finished
from replicate.experiments.planfile import Plan, PlannedNet

SUBMITIT_FOLDER = "submitit"


def _job_id() -> str | None:
    try:
        return submitit.JobEnvironment().job_id
    except RuntimeError:  # not inside a submitit job
        return None


class TrainNet(submitit.helpers.Checkpointable):
    """Train one net to the end; safe to call again on the same net (finished: nothing to do,
    stopped: resumed with --snapshot).  Raises when training fails, so that the job fails and
    its dependants' `afterok` is never met."""

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
        self._proc = launch(net, device=self.device, train_command=self.train_command, job_id=_job_id(),
                            snapshot_keep=self.snapshot_keep)
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
        if record["state"] != netstate.DONE:
            raise ReplicateError(f"net {net.name!r} {record['state']}: {record['error']}")
        return netstate.DONE

    def checkpoint(self, net: PlannedNet) -> submitit.helpers.DelayedSubmission:
        """Stop the trainer (it snapshots on SIGINT) and requeue the same call, which resumes
        from the newest solver state."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop_requested = True
            proc.process.send_signal(signal.SIGINT)
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


def make_executor(
    plan: Plan,
    *,
    partition: str,
    time_min: int = 4320,
    gpus_per_node: int = 1,
    cpus_per_task: int | None = None,
    array_parallelism: int = 256,
    signal_delay_s: int = 120,
    max_requeues: int = 20,
) -> submitit.AutoExecutor:
    """A SLURM executor writing each job's files under `<runs>/submitit/<job id>`; the jobs
    import this very package (PYTHONPATH), whether it is installed or not."""
    try:
        executor = submitit.AutoExecutor(
            folder=plan.path.parent / SUBMITIT_FOLDER / "%j", cluster="slurm", slurm_max_num_timeout=max_requeues
        )
    except RuntimeError:  # submitit found no `srun`
        raise ReplicateError("no SLURM here (`srun` is not on PATH): submit from a SLURM login node") from None
    executor.update_parameters(
        timeout_min=time_min,
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
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
) -> dict[str, submitit.Job | str]:
    """Queue every unfinished net of `plan` (only those in `only` and what they depend on, when
    given) on `executor` (make_executor's SLURM one, or e.g. submitit's LocalExecutor); the job of each net, or the id of the job an earlier submission
    queued for it (kept unless `resubmit`: submitting twice must not train a net twice)."""
    nets = plan.with_dependencies(list(only)) if only else plan.nets
    nets = [n for n in plan.ordered() if n in nets]
    finished = {n.name for n in nets if is_finished(n)}
    jobs: dict[str, submitit.Job | str] = {}
    todo = []
    for net in nets:
        record = netstate.read_status(net.dir)
        if net.name in finished:
            continue
        if not resubmit and record.get("state") in (netstate.QUEUED, netstate.RUNNING) and record.get("job_id"):
            jobs[net.name] = record["job_id"]
            report(f"{net.name}: already queued as job {record['job_id']} (--resubmit if that job is gone)")
        else:
            todo.append(net)
    trainer = TrainNet(device=device, train_command=train_command, stop_timeout_s=stop_timeout_s,
                       snapshot_keep=snapshot_keep)
    blocked: dict[str, str] = {}
    for base, group in _groups(todo, finished).items():
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
                                       slurm_additional_parameters=extra)
        # Recorded as queued before submitting, and given the job id after only if the job has
        # not started yet: a job that starts at once writes its own record first.
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
        report(f"queued {len(group)} net(s){after}: {', '.join(n.name for n in group)}")
    return jobs


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
