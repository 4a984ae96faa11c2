"""Signal requests are never lost, and every process of a run takes the same one."""

from __future__ import annotations

import signal

from replicate.solver import requests as req


def test_a_signal_during_the_pooling_is_taken_next_time() -> None:
    # A process of a data-parallel run waits inside `agree` (an all-reduce) for the others; a
    # SIGTERM's handler runs as soon as that wait returns, before take() has chosen.
    requests = req.Requests()
    landed = []

    def agree(pending: set[str]) -> set[str]:
        if not landed:
            landed.append(True)
            requests._on_signal(signal.SIGTERM, None)
        return pending  # the other processes asked for nothing

    requests.agree = agree
    assert requests.take() is None  # the others did not see it yet: nobody acts now
    assert requests.take() == req.REQUEUE  # ... and it is pooled and acted on at the next check
    assert requests.requeue_signal == "SIGTERM"
    assert requests.take() is None


def test_what_another_process_asked_is_taken_here_once() -> None:
    requests = req.Requests()
    others = {req.SNAPSHOT, req.STOP}
    requests.agree = lambda pending: pending | others
    assert requests.take() == req.STOP
    others.clear()  # the other process took STOP too, and SNAPSHOT is still pending there...
    others.add(req.SNAPSHOT)
    assert requests.take() == req.SNAPSHOT
    others.clear()
    assert requests.take() is None


def test_several_signals_are_taken_most_drastic_first() -> None:
    requests = req.Requests()
    requests._on_signal(signal.SIGHUP, None)
    requests._on_signal(signal.SIGINT, None)
    requests._on_signal(signal.SIGUSR2, None)
    assert [requests.take() for _ in range(4)] == [req.REQUEUE, req.STOP, req.SNAPSHOT, None]
