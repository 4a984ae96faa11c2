"""Images per second of each data path (serial, worker processes, GPU) over one source.

Batches are TRAIN-phase (random crop of `crop`, or of the image when smaller, and mirror, plus an
optional mean file), as a training run draws them.  The first batch of each path is not timed
(worker start-up, CUDA initialisation).  Shared by `data bench` and `bench`.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from replicate.data.loader import (
    BatchMaker, Encoded, GpuLoader, ImageListSource, LmdbSource, SerialLoader, Source, WorkerLoader, item_size,
)
from replicate.data.transform import TRAIN, DataTransformer
from replicate.data.view import ViewSource, is_view
from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".JPEG", ".png")


def folder_source(folder: str | Path) -> ImageListSource:
    """Every image file under `folder` (sorted, label 0), as ImageData reads a list."""
    root = Path(folder)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in IMAGE_SUFFIXES)
    if not names:
        raise ReplicateError(f"{folder}: no image files (.jpg, .jpeg, .png) in it")
    return ImageListSource([(n, 0) for n in names], str(root) + "/", 0, 0, True, False)


def train_maker(source: Source, batch: int, crop: int = 227, mean: str | None = None) -> BatchMaker:
    first = source.item(source.index(0, 0))
    param = caffe_pb2.TransformationParameter(mirror=True)
    height, width = item_size(first)
    param.crop_size = min(crop, height, width)
    if mean:
        param.mean_file = mean
    return BatchMaker(source, DataTransformer(param, TRAIN, "bench"), batch, seed=0)


def open_source(path: str | Path) -> Source:
    """A view of a store (`data prepare`) or an LMDB, as a Data layer would read it."""
    return ViewSource(path) if is_view(path) else LmdbSource(path)


def source_kind(source: Source) -> str:
    """"lmdb-raw", "lmdb-jpeg" (encoded records), "view-raw", "view-jpeg" or "jpeg-folder"."""
    if isinstance(source, (LmdbSource, ViewSource)):
        encoded = isinstance(source.item(0).payload, Encoded)
        kind = "lmdb" if isinstance(source, LmdbSource) else "view"
        return f"{kind}-jpeg" if encoded else f"{kind}-raw"
    return "jpeg-folder"


def rate(loader, batches: int, batch_size: int, sync: bool = False) -> float:
    next(loader)
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    if sync:
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def loader_rates(maker: BatchMaker, batches: int, workers: int = 0, gpu: bool = False) -> dict[str, float | str]:
    """images/s of the serial path, of `workers` worker processes, and of the GPU path with its
    records read in this process and by `workers` processes (or why it is unavailable)."""
    rates: dict[str, float | str] = {"serial": rate(SerialLoader(maker), batches, maker.batch_size)}
    if workers > 0:
        loader = WorkerLoader(maker, workers)
        try:
            rates[f"workers_{workers}"] = rate(loader, batches, maker.batch_size)
        finally:
            loader.close()
    if gpu:
        for n in sorted({0, workers}):
            name = f"gpu_workers_{n}" if n else "gpu"
            try:
                loader = GpuLoader(maker, "cuda", n)
            except ReplicateError as err:
                rates[name] = f"unavailable ({err})"
                continue
            try:
                rates[name] = rate(loader, batches, maker.batch_size, sync=True)
            finally:
                loader.close()
    return rates
