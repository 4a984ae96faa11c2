"""GPU tier: every golden case of real Caffe, on the tier's device in fp32 (TF32 off).

The same cases and checks as tests/test_golden.py, with the nets, inputs and Caffe's update on
the device, and the same tolerance for every case: forward and trajectories 1e-5 relative to the
blob's largest value, gradients 1e-4 (golden_checks._compare).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_golden import _CASES, _checkers, _id

pytestmark = pytest.mark.gpu

@pytest.mark.parametrize("root_case", _CASES, ids=_id)
def test_golden_case_on_the_device(root_case: tuple[Path, Path], device: torch.device) -> None:
    root, case = root_case
    name = case.relative_to(root).as_posix()
    (checker,) = [m for m in _checkers() if m.handles(name)]
    if getattr(checker, "DEVICE_FREE", False):
        pytest.skip(f"{checker.__name__}: the engine computes nothing on a device here")
    checker.check(case, device)
