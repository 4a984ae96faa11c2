"""Time one whole test pass of CaffeNet through the real Solver: the paper's validation.

The paper's solver tests on 1,000 batches of 50 images (test_iter 1000) every test_interval; over
450,000 iterations that pass runs about 450 times per net, so its cost matters next to the
step's.  The test net is the benchmark CaffeNet in the TEST phase (dropout off) with Caffe's
Accuracy beside the loss, fed synthetic batches; `Solver.test` runs it as training does: under
no_grad, compiled with `compile`, outputs summed on the device and read once at the end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch._dynamo

from replicate.bench.step import caffenet, solver_param, sync, synthetic_batch
from replicate.solver.log import RunLog
from replicate.solver.solver import Solver


def time_test_pass(
    device: torch.device, batch: int, iterations: int, precision: str, channels_last: bool = False,
    compile: bool | str = False, warmup: int = 5,
) -> dict[str, Any]:
    """Seconds for `iterations` test batches of `batch` images, after a short untimed pass."""
    torch._dynamo.reset()
    net = caffenet(batch)
    net.layer.add(name="accuracy", type="Accuracy", bottom=["fc8", "label"], top=["accuracy"])
    param = solver_param(caffenet(1), device)
    param.test_net_param.add().CopyFrom(net)
    param.test_iter.append(warmup)
    param.test_interval = param.max_iter  # Caffe wants one with a test net; this solver never solves
    solver = Solver(param, Path.cwd(), device, RunLog(None, None), precision, channels_last, compile)
    inputs = synthetic_batch(batch, device, channels_last)
    try:
        solver.test(0, inputs)  # compiling, cuDNN's algorithm search
        param.test_iter[0] = iterations
        sync(device)
        start = time.perf_counter()
        solver.test(0, inputs)  # ends by reading the sums: the device is done
        seconds = time.perf_counter() - start
    finally:
        solver.close()
    return {"precision": precision, "batch": batch, "test_iter": iterations, "channels_last": channels_last,
            "compile": compile, "compile_checks": solver.compile_checks, "seconds": seconds,
            "images_per_s": batch * iterations / seconds}
