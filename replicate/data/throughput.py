"""Images per second of each data path (serial, worker processes, GPU) over one source.

Batches are TRAIN-phase (random crop of `crop`, or of the image when smaller, and mirror, plus an
optional mean file), as a training run draws them.  The first batch of each path is not timed
(worker start-up, CUDA initialisation).  Shared by `data bench` and `bench`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from replicate.data.item import Encoded
from replicate.data.loader import BatchMaker, GpuLoader, SerialLoader, WorkerLoader, item_size, read_host_batch
from replicate.data.sources import ImageListSource, LmdbSource, Source
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


@dataclass
class Rate:
    """One loader path over the timed batches: images/s, and the training process's own CPU
    seconds per image received (time.process_time: all its threads, none of its workers), which
    sets how fast one consumer core could take batches whatever the number of workers."""

    images_per_s: float
    consumer_cpu_s_per_image: float
    #: The largest difference of the path's first batch from the serial path's (0.0: the same;
    #: a GPU's JPEG decoder may differ from libjpeg by a grey level), None when not compared.
    max_abs_diff_vs_serial: float | None = None
    #: Whether the workers' slots were page-locked (GPU path with workers; else None).
    pinned: bool | None = None

    @property
    def ceiling(self) -> float | None:
        """Images/s one core of the training process could receive (1 / its CPU per image; None
        when the clock saw no CPU time at all)."""
        return 1 / self.consumer_cpu_s_per_image if self.consumer_cpu_s_per_image > 0 else None


def _difference(batch: tuple[torch.Tensor, torch.Tensor], reference: tuple[torch.Tensor, torch.Tensor]) -> float:
    data, label = (t.cpu() for t in batch)
    if data.shape != reference[0].shape or not torch.equal(label, reference[1]):
        return float("inf")
    return float((data - reference[0]).abs().max())


def rate(loader, batches: int, batch_size: int, sync: bool = False,
         reference: tuple[torch.Tensor, torch.Tensor] | None = None) -> Rate:
    """The loader's rate over `batches` after an untimed first one, which is compared with
    `reference` (the serial path's first batch) when given."""
    first = next(loader)
    difference = None if reference is None else _difference(first, reference)
    del first
    if sync:
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(loader)
    if sync:
        torch.cuda.synchronize()
    images = batches * batch_size
    return Rate(images / (time.perf_counter() - start), (time.process_time() - cpu) / images, difference)


def decode_rate(maker: BatchMaker, batches: int, device: str | torch.device) -> Rate | None:
    """`decode_jpegs` alone over `batches` batches of JPEG records read beforehand (after an untimed
    first batch), or None when the records are not encoded.  On a GPU this is the most the GPU
    path can reach: torchvision's nvjpeg call takes a lock of the process's and waits for the
    device's decoder before it returns, so it runs in the loader thread, one batch after another,
    while everything else of the path could overlap it.  Comparing it with the GPU path's rate
    says whether decoding or the loader thread's other work bounds the path."""
    device = torch.device(device)
    hosts = [read_host_batch(maker, k) for k in range(batches + 1)]
    if not hosts[0].encoded:
        return None
    param = maker.transformer.param
    hosts[0].decoded(device, param)
    sync = device.type == "cuda"
    if sync:
        torch.cuda.synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    for host in hosts[1:]:
        host.decoded(device, param)
    if sync:
        torch.cuda.synchronize(device)
    images = sum(len(host.encoded) for host in hosts[1:])
    return Rate(images / (time.perf_counter() - start), (time.process_time() - cpu) / images)


def loader_rates(maker: BatchMaker, batches: int, workers: int = 0, gpu: bool = False) -> dict[str, Rate | str]:
    """The serial path, `workers` worker processes, and the GPU path with its records read in this
    process and by `workers` processes (or why it is unavailable), and for JPEG records the
    device's decoder alone (`decode_rate`)."""
    reference = maker.make(0)
    rates: dict[str, Rate | str] = {"serial": rate(SerialLoader(maker), batches, maker.batch_size)}
    if workers > 0:
        loader = WorkerLoader(maker, workers)
        try:
            rates[f"workers_{workers}"] = rate(loader, batches, maker.batch_size, reference=reference)
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
                rates[name] = rate(loader, batches, maker.batch_size, sync=True, reference=reference)
                rates[name].pinned = loader.pinned
            finally:
                loader.close()
        decoded = decode_rate(maker, batches, "cuda") if isinstance(rates.get("gpu"), Rate) else None
        if decoded is not None:
            rates["device_decode_only"] = decoded
    return rates


def loader_entry(rates: dict[str, Rate | str]) -> dict[str, dict[str, float | str]]:
    """`loader_rates` as bench's JSON fields: images/s, consumer CPU s per image, its ceiling, the
    first batch's largest difference from the serial path's, and whether the slots were pinned."""
    def field(get) -> dict[str, float | str]:
        return {k: get(v) if isinstance(v, Rate) else v for k, v in rates.items()}
    return {"images_per_s": field(lambda r: r.images_per_s),
            "consumer_cpu_s_per_image": field(lambda r: r.consumer_cpu_s_per_image),
            "consumer_ceiling_images_per_s": field(lambda r: r.ceiling),
            "max_abs_diff_vs_serial": field(lambda r: r.max_abs_diff_vs_serial),
            "pinned": field(lambda r: r.pinned)}
