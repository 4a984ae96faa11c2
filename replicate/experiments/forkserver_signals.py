"""Imported by the grid's forkserver, and only there, before it forks any trainer.

A scheduler signals every process of a job (SLURM: SIGTERM on `scancel` or a requeue, SIGUSR2
as a time-limit warning) and a terminal its whole process group (SIGINT, SIGHUP).  The forkserver
is such a process: killed, it could no longer report its trainers' exit statuses, and a trainer
that had stopped cleanly after a snapshot (exit 75, requeue) would count as failed.  So the
server ignores them; each trainer restores its own dispositions after the fork
(preload._train), and the grid, not these signals, stops the trainers.  The server still ends
when the grid does (its control pipe closes)."""

import signal

for _signal in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR2):
    signal.signal(_signal, signal.SIG_IGN)
