"""Batches for the data layers: one process, worker processes, or decoding on the GPU.

Every path computes batch `k` the same way (`BatchMaker.make`): the records at positions
`start + k * batch_size + i` of the source (wrapping around its end, as Caffe's Data layer restarts
its cursor), decoded, then transformed with random draws from a generator seeded by
(seed, k).  So a batch depends only on the source, the transform, the seed and its number, and the
worker path (`WorkerLoader`: batch k computed by a worker of the process's one pool,
replicate.data.pool, delivered in order) yields exactly what the serial path (`SerialLoader`) does.

`GpuLoader` reads the records (in the main process, or ahead in the pool's workers) and does the
rest on a CUDA device: raw records are copied as uint8 through page-locked buffers on a copy
stream, JPEGs are decoded there (`decode_jpegs`: nvjpeg, with the CPU for what it cannot take);
crop, mirror, mean and scale run on the device (`DataTransformer.apply`, one gather per batch with
the same float32 arithmetic).  torchvision is imported only when a JPEG must be decoded on the
device, and a machine without CUDA or torchvision gets a ReplicateError that says so."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from replicate.data.image import decode_image, image_size, read_image, resize_linear
from replicate.data.item import Encoded, Item
from replicate.data.lmdb_io import LmdbReader, datum_array
from replicate.data.pool import DataPool, Job, Stream
from replicate.data.transform import DataTransformer, Draw, batch_rng
from replicate.errors import ReplicateError

Batch = tuple[torch.Tensor, torch.Tensor]


class Source(Protocol):
    def __len__(self) -> int: ...
    def index(self, position: int, seed: int) -> int: ...
    def item(self, index: int) -> Item: ...
    def reopen(self) -> None: ...
    def close(self) -> None: ...


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

    def close(self) -> None:
        """Release the LMDB environment (a later read opens it again)."""
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

    def close(self) -> None:
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
        return item.payload.size or image_size(item.payload.data, item.where)
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
        their draws; labels as float32 on the host (page-locked beside GPU images), where the net
        checks them before moving them to its device without waiting."""
        stacked = isinstance(images, torch.Tensor)
        data = self.transformer.apply(images, draws) if stacked else self.transformer.apply_each(images, draws)
        label = torch.tensor(labels, dtype=torch.float32)
        return data, label.pin_memory() if data.device.type == "cuda" else label

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


def _make(maker: BatchMaker, k: int) -> Batch:
    return maker.make(k)


def _stream(maker: BatchMaker, job: Job, workers: int, prefetch: int, pool: DataPool | None,
            first: int) -> tuple[Stream, DataPool | None]:
    """A stream of `maker`'s batches from `first` on, from the process's shared `pool`, or from a
    pool of `workers` of its own (returned, for the loader to close)."""
    own = None if pool is not None else DataPool(workers)
    return Stream(pool or own, maker, job, prefetch, first), own


class WorkerLoader:
    """Batches computed ahead, decoded and transformed, by worker processes: the process's shared
    `pool`, or `workers` of its own."""

    def __init__(self, maker: BatchMaker, workers: int = 0, prefetch: int = 4, pool: DataPool | None = None,
                 first: int = 0):
        self.maker = maker
        self._stream, self._own = _stream(maker, _make, workers, prefetch, pool, first)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return next(self._stream)

    def close(self) -> None:
        """Stop the worker processes this loader started (a shared pool is its owner's to stop)."""
        if self._own is not None:
            self._own.close()


#: JPEG start-of-frame markers (baseline, extended, progressive, lossless; not DHT/JPG/DAC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_components(data: bytes) -> int:
    """The number of colour components of a JPEG's frame (1 grey, 3 YCbCr, 4 CMYK/YCCK); 0 when
    `data` is not a JPEG (a PNG saved as .JPEG, say) or its header is unreadable."""
    if data[:2] != b"\xff\xd8":
        return 0
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return 0
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in _SOF:
            return data[i + 9] if i + 9 < len(data) else 0
        if marker == 0xDA:
            return 0
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return 0


def decode_jpegs(device: torch.device, blobs: list[bytes], force_color: bool, force_gray: bool,
                 where: list[str]) -> list[torch.Tensor]:
    """CHW uint8 (BGR) images of encoded records, decoded on `device`.

    JPEGs of 1 or 3 components go to torchvision's decode_jpeg on the device (nvjpeg on a GPU) in
    one batched call; what it is not meant for (CMYK and YCCK JPEGs, a PNG saved as .JPEG,
    anything not a JPEG) and anything it refuses is decoded on the CPU by the reference decoder
    (replicate.data.image, Caffe's OpenCV conversion rules) and copied over.  On the CPU torchvision
    decodes with the same libjpeg-turbo arithmetic as the reference (the tests check both agree).
    """
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        raise ReplicateError(
            "GPU JPEG decoding needs torchvision (pip install 'replicate[gpu]'); "
            "use the CPU loader for encoded LMDBs"
        ) from None
    mode = ImageReadMode.RGB if force_color else ImageReadMode.GRAY if force_gray else ImageReadMode.UNCHANGED
    images: list[torch.Tensor | None] = [None] * len(blobs)
    native = [i for i, b in enumerate(blobs) if jpeg_components(b) in (1, 3)]
    data = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in native]
    try:
        decoded = decode_jpeg(data, mode=mode, device=device) if data else []
    except RuntimeError:  # one of them refused: decode one by one, so only that one falls back
        decoded = []
        for tensor in data:
            try:
                decoded.append(decode_jpeg(tensor, mode=mode, device=device))
            except RuntimeError:
                decoded.append(None)
    for i, image in zip(native, decoded):
        # torchvision gives RGB; Caffe's images are BGR.
        images[i] = None if image is None else image.flip(0) if image.shape[0] == 3 else image
    color = True if force_color else False if force_gray else None
    for i, image in enumerate(images):
        if image is None:
            pixels = decode_image(blobs[i], color, where[i]).transpose(2, 0, 1)
            images[i] = torch.from_numpy(pixels.copy()).to(device)
    return images  # type: ignore[return-value]


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
    names: list[str]


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
                     [it.label for it in items], draws, [items[i].where for i in encoded_at])


class PinnedRing:
    """Host-to-device copies on a stream of their own, staged through page-locked buffers reused in
    turn: a buffer is refilled only after the copy that last read it has finished (its event), and
    the compute stream waits for each copy before using its result.  On the CPU (tests) a copy is
    a plain copy."""

    def __init__(self, device: torch.device, slots: int = 3):
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.buffers: list[torch.Tensor | None] = [None] * slots
        self.events: list[torch.cuda.Event | None] = [None] * slots
        self.next = 0

    def to_device(self, host: torch.Tensor) -> torch.Tensor:
        if not self.cuda:
            return host.to(self.device, copy=True)
        slot, self.next = self.next, (self.next + 1) % len(self.buffers)
        if self.events[slot] is not None:
            self.events[slot].synchronize()
        nbytes = host.numel() * host.element_size()
        buffer = self.buffers[slot]
        if buffer is None or buffer.numel() < nbytes:
            buffer = self.buffers[slot] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        staged = buffer[:nbytes].view(host.dtype).view(host.shape)
        staged.copy_(host)
        with torch.cuda.stream(self.stream):
            out = staged.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        self.events[slot] = event
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(event)
        out.record_stream(compute)
        return out


class GpuLoader:
    """Batches whose decoding (encoded JPEGs) and transforms run on `device`.

    The host only reads records (in this process, or ahead in worker processes: the process's
    shared `pool` or `workers` of its own); raw pixels travel as uint8, a quarter of the float32
    batch, through a ring of page-locked buffers on a copy stream of their own (PinnedRing); JPEGs
    are decoded on the device (decode_jpegs); crop, mirror, mean and scale run on the device as one
    gather (`DataTransformer.apply`).  With device "cpu" everything runs as it would on a GPU, with
    torchvision's CPU decoder in nvjpeg's place, which is how the tests check this path.
    """

    def __init__(self, maker: BatchMaker, device: str | torch.device = "cuda", workers: int = 0, prefetch: int = 4,
                 pool: DataPool | None = None, first: int = 0):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ReplicateError("the GPU data path needs a CUDA device, and torch sees none")
        self.maker = maker
        self.next_batch = first
        self._ring = PinnedRing(self.device)
        self._stream, self._own = (None, None) if workers == 0 and pool is None else \
            _stream(maker, read_host_batch, workers, prefetch, pool, first)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        host = next(self._stream) if self._stream is not None else read_host_batch(self.maker, self.next_batch)
        self.next_batch += 1
        stacked = None if host.stacked is None else self._ring.to_device(host.stacked)
        if stacked is not None and len(host.stacked_at) == len(host.labels):
            return self.maker.finish(stacked, host.labels, host.draws)
        images: list[torch.Tensor | None] = [None] * len(host.labels)
        if stacked is not None:
            for i, img in zip(host.stacked_at, stacked.unbind(0)):
                images[i] = img
        for i, img in zip(host.loose_at, host.loose):
            images[i] = self._ring.to_device(img)
        if host.encoded:
            p = self.maker.transformer.param
            decoded = decode_jpegs(self.device, host.encoded, p.force_color, p.force_gray, host.names)
            for i, img in zip(host.encoded_at, decoded):
                images[i] = img
        return self.maker.finish(images, host.labels, host.draws)

    def close(self) -> None:
        """Stop the worker processes this loader started, if any."""
        if self._own is not None:
            self._own.close()


def make_loader(maker: BatchMaker, workers: int = 0, prefetch: int = 4, device: str | None = None,
                pool: DataPool | None = None, first: int = 0):
    """The loader for a data layer, starting at batch `first`: the GPU path when `device` is a CUDA
    device (records read by the process's shared `pool`, or `workers` processes of its own, or
    here), else worker processes that do everything (the pool or `workers` of its own), else this
    process."""
    if device is not None and torch.device(device).type == "cuda":
        return GpuLoader(maker, device, workers, prefetch, pool, first)
    if pool is not None or workers > 0:
        return WorkerLoader(maker, workers, prefetch, pool, first)
    return SerialLoader(maker, first)
