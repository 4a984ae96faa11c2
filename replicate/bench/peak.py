"""How much arithmetic a training step does, and how much a GPU can do: the "fraction of peak".

FLOPs are counted from the net itself: 2 per multiply-add of every Convolution and InnerProduct,
forward once and backward twice (weight gradient, and input gradient where the bottom needs
one), the usual way of quoting a step; elementwise layers, LRN and pooling are left out.  For
CaffeNet that is about 4.1 GFLOP per image.

Peaks are NVIDIA's dense (no sparsity) datasheet numbers in TFLOP/s, per precision: fp32 on CUDA
cores, tf32 and bf16 on tensor cores.  An unknown device has no peak (null in the JSON).
"""

from __future__ import annotations

import math

from replicate.net.compile import CompiledNet

#: (substring of torch.cuda.get_device_name(), {precision: dense TFLOP/s}); first match wins.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0}),
    ("H200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0}),
    ("H100 PCIe", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0}),
    ("H100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),  # SXM5 ("NVIDIA H100 80GB HBM3")
)


def peak_tflops(device_name: str, precision: str) -> float | None:
    for key, peaks in PEAK_TFLOPS:
        if key in device_name:
            return peaks.get(precision)
    return None


def step_flops(net: CompiledNet) -> float:
    """Forward + backward FLOPs of one training step of `net` (whole batch)."""
    total = 0.0
    for i, (lp, layer) in enumerate(zip(net.layer_params, net.layers)):
        if lp.type not in ("Convolution", "InnerProduct"):
            continue
        weight = layer.blobs[0]
        out = math.prod(net.blob_shapes[net.top_names[i][0]])
        per_output = weight.numel() // weight.shape[0]  # (C_in / group) * kh * kw, or K
        macs = out * per_output
        input_grad = any(net.backward_plan.bottom_needs[i])
        total += 2 * macs * (1 + 1 + int(input_grad))
    return total
