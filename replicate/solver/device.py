"""The device a run computes on: its arithmetic (`--precision`: fp32 is Caffe's, tf32 and bf16 trade
exactness for speed) and the name the run's metrics and the benchmarks give it."""

from __future__ import annotations

import torch

from replicate.errors import ReplicateError
from replicate.machine import cpu_model

PRECISIONS = ("fp32", "tf32", "bf16")


def device_name(device: torch.device) -> str:
    """The accelerator's marketing name ("NVIDIA H100 80GB HBM3"), or the CPU's (machine.cpu_model)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def set_precision(precision: str) -> None:
    """fp32 is Caffe's arithmetic (TF32 off); tf32 lets matmuls and convolutions use TF32."""
    if precision not in PRECISIONS:
        raise ReplicateError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
