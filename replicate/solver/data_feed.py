"""The nets' data layers, pointed at the device they train on: how many worker processes read
their records, where the batches are decoded and transformed, and the one pool they share.

The solver calls this once its nets are built; what it chose goes into the run's metrics."""

from __future__ import annotations

import torch

from replicate.data.pool import DataPool, workers_per_process
from replicate.errors import ReplicateError
from replicate.net.compile import CompiledNet


def default_data_workers(device: torch.device) -> int | None:
    """On a GPU, reading records for ~20,000 images/s takes several cores: one worker per CPU this
    process may use (its affinity, SLURM_CPUS_PER_TASK; not the machine's count), less one for
    itself, shared by the training processes torchrun starts on this machine (LOCAL_WORLD_SIZE).
    On the CPU the cores already train the net: no default (REPLICATE_DATA_WORKERS or 0)."""
    if device.type != "cuda":
        return None
    return workers_per_process()


def data_layers(nets: list[CompiledNet]) -> list:
    """The layers of `nets` that load batches themselves (Data, ImageData)."""
    return [layer for net in nets for layer in net.layers if hasattr(layer, "configure")]


def close_data_layers(nets: list[CompiledNet]) -> None:
    """Stop the worker processes of the nets' data layers and release their files (a later
    forward starts them again where they stopped)."""
    for layer in data_layers(nets):
        layer.close()


def feed_data(
    nets: list[CompiledNet], device: torch.device, workers: int | None
) -> tuple[dict[str, object], DataPool | None]:
    """Point the nets' data layers at the device they train on: on a GPU the records are read by
    `workers` processes (default `default_data_workers`) and decoded and transformed on the GPU
    (replicate.data.loader.GpuLoader); on the CPU `workers` processes do everything.  One pool of
    workers serves every data layer of the nets (replicate.data.pool); the caller closes it.  The
    batches are the same whichever path makes them.  Returns what was chosen, for the run's
    metrics, and the pool (None without workers)."""
    if workers is not None and workers < 0:
        raise ReplicateError(f"data workers must be 0 or more, not {workers}")
    layers = data_layers(nets)
    if not layers:
        return {}, None
    if workers is None:
        workers = default_data_workers(device)
    if workers is None:
        workers = layers[0].workers  # REPLICATE_DATA_WORKERS
    gpu = device.type == "cuda"
    pool = DataPool(workers, pin_memory=gpu) if workers > 0 else None
    for layer in layers:
        layer.configure(workers=workers, device=str(device) if gpu else None, pool=pool)
    return {"data_path": "gpu" if gpu else "cpu", "data_workers": workers}, pool
