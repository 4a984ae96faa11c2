"""Batches for the data layers: one process, several worker processes, or decoding on the GPU.

Every path computes batch `k` the same way (`BatchMaker.make`): the records at positions
`start + k * batch_size + i` of the source (wrapping around its end, as Caffe's Data layer restarts
its cursor), decoded, then transformed with random draws from a generator seeded by
(seed, k).  So a batch depends only on the source, the transform, the seed and its number, and the
worker path (`WorkerLoader`, a torch DataLoader whose item k is batch k, delivered in order)
yields exactly what the serial path (`SerialLoader`) does.

`GpuLoader` reads the records (in the main process, or ahead in worker processes that hand over
page-locked batches) and does the rest on a CUDA device: encoded JPEGs are decoded there with
`torchvision.io.decode_jpeg(device=...)`, raw records are copied as uint8; crop, mirror, mean and
scale run on the device (`DataTransformer.apply`, one gather per batch with the same float32
arithmetic).  torchvision is imported only when a JPEG must be decoded on the GPU, and
a machine without CUDA or torchvision gets a ReplicateError that says so.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from replicate.data.image import decode_image, image_size, read_image, resize_linear
from replicate.data.lmdb_io import LmdbReader, datum_array
from replicate.data.transform import DataTransformer, Draw, batch_rng
from replicate.errors import ReplicateError

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Encoded:
    """An image still in its file format (an encoded Datum)."""

    data: bytes


@dataclass(frozen=True)
class Item:
    """One record: CHW pixels (uint8 or float32) or encoded bytes, its label, and its name."""

    payload: np.ndarray | Encoded
    label: int
    where: str


class Source(Protocol):
    def __len__(self) -> int: ...
    def index(self, position: int, seed: int) -> int: ...
    def item(self, index: int) -> Item: ...
    def reopen(self) -> None: ...


class LmdbSource:
    """The records of an LMDB in key order; position p is record p mod N."""

    def __init__(self, path: str | os.PathLike[str]):
        self.reader = LmdbReader(path)

    def __len__(self) -> int:
        return len(self.reader)

    def index(self, position: int, seed: int) -> int:
        return position % len(self.reader)

    def item(self, index: int) -> Item:
        datum = self.reader.datum(index)
        where = self.reader.where(index)
        payload = Encoded(datum.data) if datum.encoded else datum_array(datum, where)
        return Item(payload, int(datum.label), where)

    def reopen(self) -> None:
        """Drop the LMDB handles (a forked worker must not use its parent's)."""
        self.reader.close()


class ImageListSource:
    """ImageData's images: `root_folder + path` (Caffe concatenates the strings) for each list
    line, decoded, and resized to new_height x new_width when those are set.  With `shuffle`, each
    pass over the list (epoch) uses its own permutation drawn from (seed, epoch), as Caffe
    reshuffles at every wrap-around."""

    def __init__(
        self,
        entries: list[tuple[str, int]],
        root_folder: str,
        new_height: int,
        new_width: int,
        is_color: bool,
        shuffle: bool,
    ):
        self.entries = entries
        self.root_folder = root_folder
        self.size = (new_height, new_width)
        self.is_color = is_color
        self.shuffle = shuffle
        self._order: tuple[int, int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def index(self, position: int, seed: int) -> int:
        epoch, offset = divmod(position, len(self.entries))
        if not self.shuffle:
            return offset
        if self._order is None or self._order[:2] != (seed, epoch):
            order = np.random.default_rng([seed & 0xFFFFFFFF, 1, epoch]).permutation(len(self.entries))
            self._order = (seed, epoch, order)
        return int(self._order[2][offset])

    def item(self, index: int) -> Item:
        name, label = self.entries[index]
        path = self.root_folder + name
        image = read_image(path, self.is_color)
        if self.size[0] > 0:
            image = resize_linear(image, *self.size)
        return Item(image.transpose(2, 0, 1), label, path)

    def reopen(self) -> None:
        pass


def decode_cpu(item: Item, transformer: DataTransformer) -> torch.Tensor:
    if isinstance(item.payload, Encoded):
        p = transformer.param
        color = True if p.force_color else False if p.force_gray else None
        return torch.from_numpy(decode_image(item.payload.data, color, item.where).transpose(2, 0, 1).copy())
    return torch.from_numpy(np.array(item.payload))


def process_shard() -> tuple[int, int]:
    """(rank, world size) of this process in a torch.distributed run; (0, 1) otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def item_size(item: Item) -> tuple[int, int]:
    """(height, width) of a record's image without decoding its pixels."""
    if isinstance(item.payload, Encoded):
        return image_size(item.payload.data, item.where)
    return item.payload.shape[-2], item.payload.shape[-1]


class BatchMaker:
    """Computes batch k of a source: the shared definition every loader path follows."""

    def __init__(
        self,
        source: Source,
        transformer: DataTransformer,
        batch_size: int,
        seed: int,
        start: int = 0,
        shard: tuple[int, int] = (0, 1),
    ):
        rank, world = shard
        if batch_size % world:
            raise ReplicateError(f"batch_size {batch_size} does not split evenly over {world} processes")
        self.source = source
        self.transformer = transformer
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.shard = shard
        #: Images per batch in this process: its slice [rank * local_size, (rank+1) * local_size)
        #: of every global batch, so the slices of all processes together are the global batch.
        self.local_size = batch_size // world

    def _positions(self, k: int, begin: int, end: int) -> list[int]:
        first = self.start + k * self.batch_size
        return [self.source.index(first + i, self.seed) for i in range(begin, end)]

    def items(self, k: int) -> list[Item]:
        begin = self.shard[0] * self.local_size
        return [self.source.item(i) for i in self._positions(k, begin, begin + self.local_size)]

    def _skip_draws(self, k: int, rng: np.random.Generator) -> None:
        """Advance batch k's generator past the images of the slices before this one, so each image
        gets the draws it gets in a single process (a draw's bits depend on the image's size)."""
        for index in self._positions(k, 0, self.shard[0] * self.local_size):
            height, width = item_size(self.source.item(index))
            self.transformer.draw(rng, height, width)

    def draws(self, k: int, items: list[Item]) -> list[Draw]:
        """Batch k's crop offsets and mirror flags for its records (sizes read from the records'
        headers, so no pixel needs decoding first)."""
        rng = batch_rng(self.seed, k) if self.transformer.needs_random else None
        if rng is not None and self.shard[0]:
            self._skip_draws(k, rng)
        sizes = [item_size(it) for it in items]
        if not self.transformer.crop and len(set(sizes)) > 1:
            raise ReplicateError(
                f"{items[0].where}: images of batch {k} differ in size and no crop_size is set"
            )
        return [self.transformer.draw(rng, height, width) for height, width in sizes]

    def finish(self, images: list[torch.Tensor] | torch.Tensor, labels: list[int], draws: list[Draw]) -> Batch:
        """Transform decoded CHW images (a list, or one N x C x H x W stack; any device) with
        their draws; labels as float32 on the images' device."""
        stacked = isinstance(images, torch.Tensor)
        data = self.transformer.apply(images, draws) if stacked else self.transformer.apply_each(images, draws)
        return data, torch.tensor(labels, dtype=torch.float32).to(data.device, non_blocking=True)

    def make(self, k: int) -> Batch:
        items = self.items(k)
        draws = self.draws(k, items)
        return self.finish([decode_cpu(it, self.transformer) for it in items], [it.label for it in items], draws)


class SerialLoader:
    """Batches first, first + 1, ... computed in this process when asked for."""

    def __init__(self, maker: BatchMaker, first: int = 0):
        self.maker = maker
        self.next_batch = first

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        batch = self.maker.make(self.next_batch)
        self.next_batch += 1
        return batch


class _Batches(Dataset):
    """Item k is batch k, finished on the CPU (WorkerLoader's workers)."""

    def __init__(self, maker: BatchMaker):
        self.maker = maker

    def __getitem__(self, k: int) -> Batch:
        return self.maker.make(k)


class _HostBatches(Dataset):
    """Item k is batch k as read on the host (GpuLoader's workers)."""

    def __init__(self, maker: BatchMaker):
        self.maker = maker

    def __getitem__(self, k: int) -> HostBatch:
        return read_host_batch(self.maker, k)


class _Counter(Sampler[int]):
    def __init__(self, first: int):
        self.first = first

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.first)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    info = get_worker_info()
    info.dataset.maker.source.reopen()


class _Ordered:
    """Items first, first + 1, ... of `dataset` computed ahead by `workers` processes and delivered
    in order; `prefetch` items are in flight in all (Caffe's data_param.prefetch)."""

    def __init__(self, dataset: Dataset, workers: int, prefetch: int, pin_memory: bool = False, first: int = 0):
        if workers < 1:
            raise ValueError("worker loading needs at least one worker")
        self._loader = DataLoader(
            dataset,
            batch_size=None,
            sampler=_Counter(first),
            num_workers=workers,
            prefetch_factor=max(1, -(-prefetch // workers)),
            worker_init_fn=_worker_init,
            persistent_workers=True,
            pin_memory=pin_memory,
        )
        self._iter: Iterator | None = None

    def __next__(self):
        if self._iter is None:
            self._iter = iter(self._loader)
        return next(self._iter)

    def close(self) -> None:
        """Stop the worker processes."""
        if self._iter is not None:
            self._iter._shutdown_workers()  # type: ignore[attr-defined]
            self._iter = None


class WorkerLoader:
    """Batches computed ahead, decoded and transformed, by `workers` processes."""

    def __init__(self, maker: BatchMaker, workers: int, prefetch: int = 4, first: int = 0):
        self.maker = maker
        self._ordered = _Ordered(_Batches(maker), workers, prefetch, first=first)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return next(self._ordered)

    def close(self) -> None:
        """Stop the worker processes."""
        self._ordered.close()


def _decode_jpegs_on(device: torch.device, blobs: list[bytes], force_color: bool, force_gray: bool) -> list[torch.Tensor]:
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        raise ReplicateError(
            "GPU JPEG decoding needs torchvision (pip install 'replicate[gpu]'); "
            "use the CPU loader for encoded LMDBs"
        ) from None
    mode = ImageReadMode.RGB if force_color else ImageReadMode.GRAY if force_gray else ImageReadMode.UNCHANGED
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    images = decode_jpeg(data, mode=mode, device=device)
    # torchvision gives RGB; Caffe's images are BGR.
    return [img.flip(0) if img.shape[0] == 3 else img for img in images]


@dataclass
class HostBatch:
    """Batch k as read on the host, before anything is decoded or transformed: raw records of
    one size stacked into one tensor (one copy to the device), raw records of other sizes and
    encoded images one by one, with each one's place in the batch, and the batch's draws."""

    stacked: torch.Tensor | None
    stacked_at: list[int]
    loose: list[torch.Tensor]
    loose_at: list[int]
    encoded: list[bytes]
    encoded_at: list[int]
    labels: list[int]
    draws: list[Draw]

    def pin_memory(self) -> HostBatch:
        """Page-locked copies, so the copies to the GPU run asynchronously (DataLoader calls this
        in its pinning thread)."""
        stacked = None if self.stacked is None else self.stacked.pin_memory()
        loose = [t.pin_memory() for t in self.loose]
        return HostBatch(stacked, self.stacked_at, loose, self.loose_at, self.encoded, self.encoded_at,
                         self.labels, self.draws)


def read_host_batch(maker: BatchMaker, k: int) -> HostBatch:
    """Read batch k's records and draws (cheap host work: LMDB reads and Datum parsing)."""
    items = maker.items(k)
    draws = maker.draws(k, items)
    encoded_at = [i for i, it in enumerate(items) if isinstance(it.payload, Encoded)]
    raw_at = [i for i, it in enumerate(items) if not isinstance(it.payload, Encoded)]
    shapes = {items[i].payload.shape for i in raw_at}
    stacked, stacked_at, loose, loose_at = None, [], [], []
    if len(shapes) == 1:
        stacked, stacked_at = torch.from_numpy(np.stack([items[i].payload for i in raw_at])), raw_at
    else:
        loose, loose_at = [torch.from_numpy(np.array(items[i].payload)) for i in raw_at], raw_at
    return HostBatch(stacked, stacked_at, loose, loose_at, [items[i].payload.data for i in encoded_at], encoded_at,
                     [it.label for it in items], draws)


class GpuLoader:
    """Batches whose decoding (encoded JPEGs) and transforms run on `device`.

    The host only reads records (in this process, or ahead in `workers` processes that hand over
    page-locked batches); raw pixels travel as uint8, a quarter of the float32 batch, and the
    crop, mirror, mean and scale run on the device as one gather (`DataTransformer.apply`).
    With device "cpu" everything but the JPEG decode runs as it would on a GPU, which is how the
    tests check this path on a machine without one.
    """

    def __init__(self, maker: BatchMaker, device: str | torch.device = "cuda", workers: int = 0, prefetch: int = 4,
                 first: int = 0):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ReplicateError("the GPU data path needs a CUDA device, and torch sees none")
        self.maker = maker
        self.next_batch = first
        self._pin = self.device.type == "cuda"
        self._ordered = _Ordered(_HostBatches(maker), workers, prefetch, self._pin, first) if workers > 0 else None

    def __iter__(self) -> Iterator[Batch]:
        return self

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        if self._pin and not host.is_pinned():
            host = host.pin_memory()
        return host.to(self.device, non_blocking=True)

    def __next__(self) -> Batch:
        if self._ordered is not None:
            host = next(self._ordered)
        else:
            host = read_host_batch(self.maker, self.next_batch)
        self.next_batch += 1
        stacked = None if host.stacked is None else self._to_device(host.stacked)
        if stacked is not None and len(host.stacked_at) == len(host.labels):
            return self.maker.finish(stacked, host.labels, host.draws)
        images: list[torch.Tensor | None] = [None] * len(host.labels)
        if stacked is not None:
            for i, img in zip(host.stacked_at, stacked.unbind(0)):
                images[i] = img
        for i, img in zip(host.loose_at, host.loose):
            images[i] = self._to_device(img)
        if host.encoded:
            p = self.maker.transformer.param
            for i, img in zip(host.encoded_at, _decode_jpegs_on(self.device, host.encoded, p.force_color, p.force_gray)):
                images[i] = img
        return self.maker.finish(images, host.labels, host.draws)

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._ordered is not None:
            self._ordered.close()


def make_loader(maker: BatchMaker, workers: int = 0, prefetch: int = 4, device: str | None = None, first: int = 0):
    """The loader for a data layer, starting at batch `first`: the GPU path when `device` is a
    CUDA device (its `workers` processes read records), else `workers` processes that do
    everything (0 = this process)."""
    if device is not None and torch.device(device).type == "cuda":
        return GpuLoader(maker, device, workers, prefetch, first)
    if workers > 0:
        return WorkerLoader(maker, workers, prefetch, first)
    return SerialLoader(maker, first)
