"""What signals ask of a training run, acted on between iterations and between test batches.

Caffe's `caffe train` turns SIGINT into "snapshot and stop" and SIGHUP into "snapshot and go on"
(its SolverAction STOP and SNAPSHOT); the solver asks for them after each update and before each
test batch.  We keep both and add a third action for schedulers: SIGTERM (what SLURM sends on
preemption, `scontrol requeue`, `scancel` and at the time limit) and SIGUSR2 (what the grid's
sbatch scripts ask SLURM to send before the limit, `--signal=USR2@120`) mean "finish the update,
snapshot, and exit with EXIT_REQUEUE", so that the job is requeued and resumes where it stopped.

Several signals before the solver looks are all kept, as Caffe keeps one flag per signal; the
solver takes them one at a time, the most drastic first (requeue, stop, snapshot).  A second SIGINT
while a stop is pending interrupts at once (KeyboardInterrupt), for a run that does not come back.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

SNAPSHOT, STOP, REQUEUE = "snapshot", "stop", "requeue"
_PRIORITY = (REQUEUE, STOP, SNAPSHOT)

#: The exit status of `train` stopped by SIGTERM or SIGUSR2 after its snapshot: sysexits.h's
#: EX_TEMPFAIL ("temporary failure; the user is invited to retry"), which the grid reads as
#: "requeue and resume", never as a failed net.
EXIT_REQUEUE = 75

_ACTIONS = {signal.SIGINT: STOP, signal.SIGTERM: REQUEUE}
for _name, _action in (("SIGHUP", SNAPSHOT), ("SIGUSR2", REQUEUE)):
    if hasattr(signal, _name):
        _ACTIONS[getattr(signal, _name)] = _action


class Requests:
    """The actions signals have asked for and the solver has not acted on yet.

    `agree` lets the processes of a data-parallel run pool their requests, so that every process
    stops, snapshots or requeues at the same iteration (signals reach them at different moments).
    """

    def __init__(self) -> None:
        self._pending: set[str] = set()
        #: The name of the signal behind the last REQUEUE request, for the log.
        self.requeue_signal: str | None = None
        self.agree: Callable[[set[str]], set[str]] = lambda pending: pending

    def ask(self, action: str, signal_name: str | None = None) -> None:
        self._pending.add(action)
        if action == REQUEUE:
            self.requeue_signal = signal_name

    def take(self) -> str | None:
        """The most drastic action pending here or (pooled by `agree`) in another process, removed
        from the pending ones; None when there is none.

        The choice comes from the pooled set alone, so every process takes the same action.  A
        signal that lands while `agree` waits for the other processes (where a process of a
        data-parallel run spends most of its wait) stays pending for the next call: replacing the
        pending set by the pooled one would drop it, and the run would never stop."""
        pooled = set(self.agree(set(self._pending)))
        for action in _PRIORITY:
            if action in pooled:
                self._pending.discard(action)
                return action
        return None

    def _on_signal(self, signum: int, frame: object) -> None:
        action = _ACTIONS[signal.Signals(signum)]
        if action == STOP and STOP in self._pending:
            raise KeyboardInterrupt
        self.ask(action, signal.Signals(signum).name)

    @contextlib.contextmanager
    def listen(self) -> Iterator[Requests]:
        """Turn SIGINT, SIGHUP, SIGTERM and SIGUSR2 into requests while the block runs (in the main
        thread only: Python delivers signals there); the previous handlers come back after it."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _ACTIONS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
