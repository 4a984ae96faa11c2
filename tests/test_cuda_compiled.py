"""GPU tier: the compiled training iteration on the device.

- One graph without breaks, recorded as a CUDA graph after its warm-up and replayed, training the
  tiny net (LRN, grouped and shared convolutions, dropout) to the eager run's weights within 1e-5.
- A plain iteration (no display, test or snapshot) never waits for the device, checked by CUDA
  itself (`torch.cuda.set_sync_debug_mode("error")`), eager and compiled.
- The run-time self-check on the device: a deliberately wrong compiled iteration is caught, logged,
  and the run goes on eager, bit for bit the eager run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch._dynamo
from gpu_tier import compile_backend, cuda_only
from test_solver_compiled import _records, _train, logged_solver, tiny_batch, tiny_solver

from replicate.solver.compiled_step import CUDA_GRAPH_WARMUP

pytestmark = pytest.mark.gpu


def _on(device: torch.device, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Images on the device, labels on the host (where `feed` checks them without a copy back)."""
    return {"data": batch["data"].to(device), "label": batch["label"]}


def _weights(solver) -> list[torch.Tensor]:
    return [e.param.detach().clone() for e in solver.entries]


def test_the_compiled_iteration_is_one_graph_replayed_as_a_cuda_graph(device: torch.device) -> None:
    torch._dynamo.reset()
    solvers = []
    for compile in (compile_backend(device), False):  # one at a time: each seeds torch's generator
        solvers.append(tiny_solver(compile, device=device))
        for k in range(CUDA_GRAPH_WARMUP + 4):
            solvers[-1].iteration(_on(device, tiny_batch(k)))
            solvers[-1].iter += 1
    solver, eager = solvers
    assert solver.unfused is None and solver.fused is not None and solver.compile_checks[0]["passed"]
    for ours, theirs in zip(_weights(solver), _weights(eager)):
        assert ours.device.type == device.type
        scale = theirs.abs().max().clamp_min(1e-30)
        assert float((ours - theirs).abs().max() / scale) <= 1e-5
    fused = solver.fused  # explain runs the step once more: after the comparison
    explained = torch._dynamo.explain(fused.step)(fused.weights, solver.net.feed(_on(device, tiny_batch(1))), fused.rate)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    if device.type == "cuda":
        assert fused._graph is not None, "the compiled iteration was never recorded as a CUDA graph"


@contextmanager
def _no_syncs() -> Iterator[None]:
    """CUDA raises on any call that would make the host wait for the device."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_plain_iterations_never_wait_for_the_device(device: torch.device, compiled: bool) -> None:
    cuda_only(device, "torch.cuda.set_sync_debug_mode")
    torch._dynamo.reset()
    solver = tiny_solver(compile_backend(device) if compiled else False, device=device)
    batches = [_on(device, tiny_batch(k)) for k in range(CUDA_GRAPH_WARMUP + 7)]
    for k in range(CUDA_GRAPH_WARMUP + 2):  # compile, check, warm up, record the CUDA graph
        solver.iteration(batches[k])
        solver.iter += 1
    torch.cuda.synchronize(device)
    with _no_syncs():
        for batch in batches[CUDA_GRAPH_WARMUP + 2:]:
            solver.iteration(batch)
            solver.iter += 1
    assert not compiled or solver.fused._graph is not None


def test_a_wrong_compiled_iteration_is_caught_on_the_device(device: torch.device, tmp_path: Path) -> None:
    """The tests' backend that doubles the learning rate inside the compiled code (registered by
    tests/test_solver_compiled.py): the check catches it at the first iteration, says so, and the
    run is the eager run from then on, bit for bit."""
    torch._dynamo.reset()
    wrong = _train(logged_solver(tmp_path / "compiled", "replicate_test_wrong_rate", device))
    eager = _train(logged_solver(tmp_path / "eager", False, device))
    for w, e in zip(wrong, eager):
        assert w.device.type == device.type and torch.equal(w, e)
    checks = [r for r in _records(tmp_path / "compiled") if r["kind"] == "compile_check"]
    assert [(r["checked"], r["passed"]) for r in checks] == [("test net #0", True), ("training iteration", False)]
    assert any(line.startswith("W") and "is wrong on torch" in line
               for line in (tmp_path / "compiled" / "train.log").read_text().splitlines())
