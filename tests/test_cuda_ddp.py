"""GPU tier: data parallel over NCCL.  Two processes, each on its own GPU (torchrun's layout:
rank r on cuda:r), train like one process on the whole batch within 1e-5, as the gloo test on
the CPU (tests/test_gpu_ddp.py) proves for the CPU path.  Needs 2 or more GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from gpu_support import free_port, metrics, run_dir, train_rank, weights
from gpu_tier import cuda_only

from replicate.solver.run import train

pytestmark = pytest.mark.gpu


def test_two_gpus_over_nccl_train_like_one(tmp_path: Path, device: torch.device) -> None:
    cuda_only(device, "NCCL data parallel")
    if torch.cuda.device_count() < 2:
        pytest.skip(f"NCCL data parallel needs 2 GPUs; {torch.cuda.device_count()} visible")
    single, double = run_dir(tmp_path / "single"), run_dir(tmp_path / "nccl")
    train(single, device=str(device), echo=False)
    mp.start_processes(train_rank, args=(2, [(free_port(), str(double), False)], "cuda"), nprocs=2, start_method="spawn")
    config = metrics(double.parent)[0]
    assert config["world_size"] == 2 and config["device"].startswith("cuda"), config
    one, two = weights(single.parent / "snap_iter_4.caffemodel"), weights(double.parent / "snap_iter_4.caffemodel")
    assert one.keys() == two.keys() and one
    for name in one:
        for a, b in zip(one[name], two[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    losses = [[m["loss"] for m in metrics(f.parent) if m["kind"] == "train"] for f in (single, double)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert json.loads((double.parent / "metrics.jsonl").read_text().splitlines()[-1])["kind"] == "done"
