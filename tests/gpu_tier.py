"""The GPU tier: tests marked `gpu` prove on a real CUDA device what the rest of the suite proves
with `device="cpu"` (golden parity, the e2e replays, the compiled step, the data path, exact resume,
reduced precision, NCCL).  `python -m pytest -m gpu` runs the tier on the first visible GPU.

Where no CUDA device is visible every tier test skips with the reason, so CI, which has none, is
unchanged.  `REPLICATE_TEST_DEVICE=cpu python -m pytest -m gpu` dry-runs the same tests on the
CPU, so the tier is proven to work before the first GPU minute is spent; the checks that only mean
something on CUDA (the CUDA graph, host syncs, nvjpeg, pinned memory, NCCL) skip there with the
reason.  A tier test never passes on the CPU by falling back: each checks where its tensors were
computed (`on`, golden_checks._compare).
"""

from __future__ import annotations

import os

import pytest
import torch

from replicate.solver.device import set_precision

#: The environment variable that picks the tier's device ("cuda" unless set).
DEVICE_ENV = "REPLICATE_TEST_DEVICE"


@pytest.fixture(scope="session")
def tier_device() -> torch.device:
    """The GPU tier's device: the first visible CUDA device, or what REPLICATE_TEST_DEVICE names.
    Skips the test (with the reason) where that device is not here."""
    device = torch.device(os.environ.get(DEVICE_ENV, "cuda"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            pytest.skip(f"GPU tier: no CUDA device here (set {DEVICE_ENV}=cpu to dry-run the tier on the CPU)")
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
    return device


@pytest.fixture
def device(tier_device: torch.device) -> torch.device:
    """The tier's device, with Caffe's arithmetic set (fp32, TF32 off) before each test: a test
    that trains in tf32 or bf16 leaves torch's global TF32 switches on behind it."""
    set_precision("fp32")
    return tier_device


def cuda_only(device: torch.device, what: str) -> None:
    """Skip a check that only means something on CUDA when the tier is dry-run on the CPU."""
    if device.type != "cuda":
        pytest.skip(f"{what}: a CUDA-only check ({DEVICE_ENV}={device.type} dry run)")


def compile_backend(device: torch.device) -> str:
    """inductor on CUDA (what users run); aot_eager in a CPU dry run (no C++ compile, same graphs)."""
    return os.environ.get("REPLICATE_TEST_COMPILE_BACKEND", "inductor" if device.type == "cuda" else "aot_eager")
