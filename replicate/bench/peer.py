"""The plain-PyTorch CaffeNet a user would write instead of this project, timed like ours.

What "peer" means in the GPU issue's figures: an `nn.Sequential` CaffeNet (grouped convolutions,
`nn.LocalResponseNorm(5, 1e-4, 0.75, 1)`, ceil-mode max pooling, dropout 0.5), `nn.CrossEntropyLoss`
and `torch.optim.SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)`; compiled means
`torch.compile` of the net, the optimizer left as it is.  It is timed on the same synthetic
batches, precision and memory layout as our step (`replicate.bench.step`), the same way: untimed
warm-up iterations, then the mean over `iterations` between two device synchronisations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo
from torch import nn

from replicate.bench.step import CROP, ms_per_call
from replicate.solver.device import set_precision


def peer_caffenet() -> nn.Sequential:
    """CaffeNet as torchvision-style code writes it (Caffe's layer sizes, PyTorch's layers)."""
    def pool() -> nn.MaxPool2d:
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), pool(), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), pool(),
        nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), pool(), nn.Flatten(),
        nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 1000),
    )


def peer_step(device: torch.device, batch: int, precision: str, channels_last: bool,
              compile: bool | str) -> Callable[[], None]:
    """One training step of the peer on a fixed synthetic batch, ready to call (the clean compiler
    state and the precision set first)."""
    torch._dynamo.reset()
    set_precision(precision)
    torch.manual_seed(0)
    net = peer_caffenet().to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    backend = compile if isinstance(compile, str) else "inductor"
    forward = torch.compile(net, backend=backend) if compile else net
    data = torch.randn(batch, 3, CROP, CROP, device=device) * 50
    if channels_last:
        data = data.contiguous(memory_format=torch.channels_last)
    label = torch.randint(0, 1000, (batch,), device=device)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = criterion(forward(data), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_peer(
    device: torch.device, batch: int, precision: str, channels_last: bool, compile: bool | str,
    iterations: int, warmup: int,
) -> dict[str, Any]:
    """ms per step and images/s of the peer in one setting."""
    ms = ms_per_call(peer_step(device, batch, precision, channels_last, compile), device, warmup, iterations)
    return {"precision": precision, "batch": batch, "channels_last": channels_last, "compile": compile,
            "ms_per_step": ms, "images_per_s": batch / (ms / 1000)}
