"""Shared helpers of golden checks: Caffe's tolerance rule, loading a case's arrays, and the
device a check runs on (the CPU in the default suite; CUDA in the GPU tier, tests/test_cuda_golden.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


CPU = torch.device("cpu")

#: The tolerances for float32 reimplementations of Caffe (docs/fidelity.md), on every device.
FORWARD_RTOL = 1e-5
GRADIENT_RTOL = 1e-4


FLT_MAX = float(np.finfo(np.float32).max)


def _errors(actual: torch.Tensor | np.ndarray, expected: np.ndarray, what: str) -> tuple[float, float]:
    """(max |actual - expected|, max |expected|) in float64, shapes checked.

    Where Caffe's value is NaN, infinite or ±FLT_MAX (the start value of its MAX pooling, left in
    a window with no pixel) ours must be the same, exactly; the other values set the scale."""
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().cpu().double().numpy()
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    special = ~np.isfinite(expected) | (np.abs(expected) == FLT_MAX)
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    assert same[special].all(), (
        f"{what}: {int((~same[special]).sum())} of Caffe's {int(special.sum())} NaN, infinite or FLT_MAX values differ, "
        f"first {actual[special & ~same][0]!r} for {expected[special & ~same][0]!r}")
    actual, expected = actual[~special], expected[~special]
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    with np.errstate(invalid="ignore"):  # a NaN or inf of ours where Caffe's is finite: the error is NaN or inf
        err = np.abs(actual - expected)
    return float(np.nan_to_num(err, nan=np.inf).max(initial=0.0)), scale


def assert_close(actual: torch.Tensor | np.ndarray, expected: np.ndarray, rtol: float, what: str) -> None:
    """|actual - expected| <= rtol * max|expected| elementwise (Caffe-golden tolerance rule)."""
    err, scale = _errors(actual, expected, what)
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} > {rtol} * max|expected| {scale:.3g}"


def tolerance_fraction(actual: torch.Tensor | np.ndarray, expected: np.ndarray, rtol: float, what: str) -> float:
    """The error as a fraction of what `assert_close` allows (above 1 fails): how close to its
    tolerance a passing case sits."""
    err, scale = _errors(actual, expected, what)
    return err / (rtol * scale)


def load_arrays(case_dir: Path) -> dict[str, np.ndarray]:
    with np.load(case_dir / "arrays.npz") as z:
        return {k: z[k] for k in z.files}


def assert_every_blob(arrays: dict[str, np.ndarray], blobs: dict[str, list], group: str) -> None:
    """Caffe's arrays under `group/` (`param`, `step3`) are exactly our blobs, `group/layer/i`:
    a check that walks our blobs must not skip one of Caffe's that our net lacks."""
    ours = {f"{group}/{layer}/{i}" for layer, params in blobs.items() for i in range(len(params))}
    caffes = {k for k in arrays if k.startswith(f"{group}/")}
    assert ours == caffes, f"{group}: only Caffe's {sorted(caffes - ours)}, only ours {sorted(ours - caffes)}"


def on(device: torch.device, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, after checking that it was computed on `device`: a check run for CUDA must never
    pass on numbers the CPU made."""
    assert tensor.device.type == device.type, f"computed on {tensor.device}, not on {device}"
    return tensor
