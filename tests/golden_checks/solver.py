"""Solver trajectories of real Caffe: 8 updates of every solver type and lr policy.

The net starts from Caffe's initial parameters, each iteration is fed Caffe's batch, and after
every update the parameters must equal Caffe's `step{k}` within the README's 1e-5 (relative to
the blob's largest magnitude); the loss of each forward pass is compared too.  This proves the
update rules (momentum form with lr inside the history, Nesterov, AdaGrad, RMSProp, AdaDelta,
Adam), weight decay (L2, L1, decay_mult), frozen layers, gradient clipping and every lr policy.

A case with `iter_size` n > 1 in its solver has n batches an iteration, `batch{k}_j` for j < n,
and the loss of each pass as `loss{k}_j`: the passes' gradients accumulate before the update
(which clips their sum, then divides it by n, as Caffe's ApplyUpdate).  Shared parameters
(`param { name }`) are one learnable blob, listed under every layer using it.  Where meta.json
has Caffe's `outputs` and `blob_loss_weights`, our net's must be the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from golden_checks._compare import CPU, FORWARD_RTOL, assert_close, assert_every_blob, load_arrays, on
from replicate.io.model import load_solver
from replicate.solver.log import RunLog
from replicate.solver.solver import Solver


def handles(case_name: str) -> bool:
    return case_name.startswith("solver_")


def trajectory(case_dir: Path, device: torch.device = CPU) -> Iterator[tuple[str, torch.Tensor, np.ndarray]]:
    """(what, ours, Caffe's) for the loss of each forward pass and each parameter blob after each
    update, in run order, trained on `device`.  Ours is the live tensor: compare it before taking
    the next item."""
    arrays = load_arrays(case_dir)
    meta = json.loads((case_dir / "meta.json").read_text())
    iters = meta["iters"]
    solver = Solver(load_solver(case_dir / "solver.prototxt"), case_dir, device, RunLog(None, echo=False))
    if "outputs" in meta:  # the net outputs and loss weights Caffe's Net has (split net's names)
        assert solver.net.output_names == meta["outputs"]
        assert solver.net.blob_loss_weights == pytest.approx(meta["blob_loss_weights"])
    blobs = solver.net.layer_blobs()
    for group in ["param", *(f"step{k}" for k in range(1, iters + 1))]:
        assert_every_blob(arrays, blobs, group)
    steps = {k.split("/")[0] for k in arrays if k.startswith("step")}
    assert steps == {f"step{k}" for k in range(1, iters + 1)}, f"Caffe's steps {sorted(steps)}, meta.json's {iters}"
    with torch.no_grad():
        for layer, params in blobs.items():
            for i, p in enumerate(params):
                p.copy_(torch.from_numpy(arrays[f"param/{layer}/{i}"]))
    passes = solver.param.iter_size
    batches = {k.split("/")[0] for k in arrays if k.startswith("batch")}
    assert batches == {f"batch{k}_{j}" for k in range(1, iters + 1) for j in range(passes)}, (
        f"Caffe's batches {sorted(batches)} are not {passes} (iter_size) per iteration for {iters} iterations"
    )
    for k in range(1, iters + 1):
        for e in solver.entries:
            e.param.grad = None
        for j in range(passes):
            inputs = {name: torch.from_numpy(arrays[f"batch{k}_{j}/{name}"]).to(device) for name in ("data", "label")}
            result = solver.net(inputs)
            if result.loss.requires_grad:  # (a net with every layer frozen has no gradient)
                result.loss.backward()  # accumulates over the passes, as Caffe's diffs do
            what, key = (f"loss of iteration {k}", f"loss{k}") if passes == 1 else (
                f"loss of pass {j} of iteration {k}", f"loss{k}_{j}")
            yield what, result.loss.detach(), arrays[key].reshape(())
        solver.apply_update()
        solver.iter += 1
        for layer, params in blobs.items():
            for i, p in enumerate(params):
                yield f"{layer}/{i} after update {k}", p, arrays[f"step{k}/{layer}/{i}"]


def check(case_dir: Path, device: torch.device = CPU) -> None:
    for what, ours, caffe in trajectory(case_dir, device):
        assert_close(on(device, ours), caffe, FORWARD_RTOL, what)
