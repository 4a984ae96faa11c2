"""Batches for the data layers: one process, worker processes, or decoding on the GPU.

Every path computes batch `k` the same way (`BatchMaker.make`): the records at positions
`start + k * batch_size + i` of the source (wrapping around its end, as Caffe's Data layer restarts
its cursor), decoded, then transformed with random draws from a generator seeded by
(seed, k).  So a batch depends only on the source, the transform, the seed and its number, and the
worker path (`WorkerLoader`: batch k computed by a worker of the process's one pool,
replicate.data.pool, written in place into shared memory and delivered in order) yields exactly
what the serial path (`SerialLoader`) does.

`GpuLoader` reads the records (in the main process, or ahead in the pool's workers, which write
them into page-locked shared memory) and does the rest on a CUDA device: raw records are copied as
uint8 on a stream of its own, JPEGs are decoded there (`decode_jpegs`: nvjpeg, with the CPU for
what it cannot take); crop, mirror, mean and scale run on the device (`DataTransformer.apply`, one
gather per batch with the same float32 arithmetic).  A thread of its own prepares up to `ahead`
batches while the training step runs, so receiving, the copy, decoding and transforms overlap the
step instead of following it.  torchvision is imported only when a JPEG must be decoded
on the device, and a machine without CUDA or torchvision gets a ReplicateError that says so."""

from __future__ import annotations

import collections
import math
import queue
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from replicate.data.image import decode_image, image_size, jpeg_components, jpeg_is_cut
from replicate.data.item import Encoded, Item
from replicate.data.pool import DataPool, Job, Stream
from replicate.data.signals import WAKE_S
from replicate.data.sources import Source
from replicate.data.transform import DataTransformer, Draw, batch_rng
from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2

Batch = tuple[torch.Tensor, torch.Tensor]


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

    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one transformed image, from the first record this maker reads (what a
        data layer's top and a worker's slot are shaped by)."""
        c, h, w = decode_cpu(self.source.item(self.source.index(self.start, self.seed)), self.transformer).shape
        return self.transformer.output_shape(c, h, w)

    def finish(self, images: list[torch.Tensor] | torch.Tensor, labels: list[int], draws: list[Draw],
               out: torch.Tensor | None = None) -> Batch:
        """Transform decoded CHW images (a list, or one N x C x H x W stack; any device) with
        their draws, on the CPU into `out` when it is of the batch's shape; labels as float32 on
        the host (page-locked beside GPU images), where the net checks them before moving them to
        its device without waiting."""
        stacked = isinstance(images, torch.Tensor)
        data = self.transformer.apply(images, draws, out) if stacked else self.transformer.apply_each(images, draws, out)
        label = torch.tensor(labels, dtype=torch.float32)
        return data, label.pin_memory() if data.device.type == "cuda" else label

    def make(self, k: int, out: torch.Tensor | None = None) -> Batch:
        items = self.items(k)
        draws = self.draws(k, items)
        return self.finish([decode_cpu(it, self.transformer) for it in items], [it.label for it in items], draws, out)


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


def _floats(slot: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """The first float32 N x C x H x W of a slot's bytes, as a tensor viewing them."""
    return torch.from_numpy(slot[: 4 * math.prod(shape)].view(np.float32).reshape(shape))


class WholeBatch:
    """The job of WorkerLoader's workers (replicate.data.pool.Job): the whole batch, transformed,
    written as float32 into the slot; its labels travel with the message."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] = ()

    def slot_bytes(self, maker: BatchMaker) -> int:
        """Before the fork (the workers inherit `shape`); 0 when the first record cannot be decoded:
        the worker that reads it reports why."""
        try:
            self.shape = (maker.local_size, *maker.output_shape())
        except ReplicateError:
            return 0
        return 4 * math.prod(self.shape)

    def __call__(self, maker: BatchMaker, k: int, slot: np.ndarray | None) -> tuple[bool, Any]:
        out = None if slot is None else _floats(slot, self.shape)
        data, label = maker.make(k, out)
        if out is not None and data.data_ptr() == out.data_ptr():
            return True, label.numpy()
        return False, (data, label)

    def receive(self, value: Any, slot: np.ndarray | None) -> Batch:
        return value if slot is None else (_floats(slot, self.shape), torch.from_numpy(value))


def _stream(maker: BatchMaker, job: Job, workers: int, prefetch: int, pool: DataPool | None,
            first: int, pin_memory: bool = False) -> tuple[Stream, DataPool | None]:
    """A stream of `maker`'s batches from `first` on, from the process's shared `pool`, or from a
    pool of `workers` of its own (returned, for the loader to close)."""
    own = None if pool is not None else DataPool(workers, pin_memory)
    return Stream(pool or own, maker, job, prefetch, first), own


def _close_stream(stream: Stream | None, own: DataPool | None) -> None:
    """Stop the worker processes a loader started; on a shared pool (its owner's to stop), give
    up the loader's stream."""
    if own is not None:
        own.close()
    elif stream is not None:
        stream.close()


class WorkerLoader:
    """Batches computed ahead, decoded and transformed, by worker processes: the process's shared
    `pool`, or `workers` of its own.  A batch views the shared memory its worker wrote (no copy);
    its slot takes another batch once the batch's tensors are all gone."""

    def __init__(self, maker: BatchMaker, workers: int = 0, prefetch: int = 4, pool: DataPool | None = None,
                 first: int = 0):
        self.maker = maker
        self._stream, self._own = _stream(maker, WholeBatch(), workers, prefetch, pool, first)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return next(self._stream)

    @property
    def delivered(self) -> dict[str, int]:
        """Batches received in place and pickled (replicate.data.pool)."""
        return self._stream.delivered

    def close(self) -> None:
        _close_stream(self._stream, self._own)


def device_decodes(blob: bytes | memoryview) -> bool:
    """Whether decode_jpegs gives this record to the device's decoder: a JPEG of 1 or 3 components
    that is not cut short.  A header walk of ~3 µs, which read_host_batch does in the workers
    rather than in the loader thread that feeds the GPU."""
    return jpeg_components(blob) in (1, 3) and not jpeg_is_cut(blob)


def decode_jpegs(device: torch.device, blobs: list[bytes | memoryview], force_color: bool, force_gray: bool,
                 where: list[str], native: list[bool] | None = None) -> list[torch.Tensor]:
    """CHW uint8 (BGR) images of encoded records, decoded on `device`.

    JPEGs of 1 or 3 components go to torchvision's decode_jpeg on the device (nvjpeg on a GPU) in
    one batched call; what it is not meant for (CMYK and YCCK JPEGs, a PNG saved as .JPEG,
    anything not a JPEG), a JPEG cut short (the reference decoder refuses it with its name) and
    anything nvjpeg refuses is decoded on the CPU by the reference decoder
    (replicate.data.image, Caffe's OpenCV conversion rules) and copied over.  On the CPU torchvision
    decodes with the same libjpeg-turbo arithmetic as the reference (the tests check both agree).
    `native` is device_decodes of each blob when the caller knows it already.
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
    takes = native if native is not None else [device_decodes(b) for b in blobs]
    on_device = [i for i, t in enumerate(takes) if t]
    data = [torch.frombuffer(blobs[i] if isinstance(blobs[i], memoryview) else bytearray(blobs[i]), dtype=torch.uint8)
            for i in on_device]
    try:
        decoded = decode_jpeg(data, mode=mode, device=device) if data else []
    except RuntimeError:  # one of them refused: decode one by one, so only that one falls back
        decoded = []
        for tensor in data:
            try:
                decoded.append(decode_jpeg(tensor, mode=mode, device=device))
            except RuntimeError:
                decoded.append(None)
    for i, image in zip(on_device, decoded):
        images[i] = image
    _rgb_to_bgr(images, [i for i in on_device if images[i] is not None and images[i].shape[0] == 3])
    color = True if force_color else False if force_gray else None
    for i, image in enumerate(images):
        if image is None:
            pixels = decode_image(blobs[i], color, where[i]).transpose(2, 0, 1)
            images[i] = torch.from_numpy(pixels.copy()).to(device)
    return images  # type: ignore[return-value]


def _rgb_to_bgr(images: list[torch.Tensor | None], at: list[int]) -> None:
    """Reverse the channels of images[i] for each i in `at` (torchvision decodes RGB; Caffe's
    images are BGR): one flip for all the images of one size, as a batch of a view's records is,
    instead of one per image, a kernel launch each on a GPU (~5-10 µs of the loader thread's
    time, which has ~29 µs an image at 35,000 images/s)."""
    by_shape: dict[torch.Size, list[int]] = collections.defaultdict(list)
    for i in at:
        by_shape[images[i].shape].append(i)  # type: ignore[union-attr]
    for group in by_shape.values():
        if len(group) == 1:
            images[group[0]] = images[group[0]].flip(0)  # type: ignore[union-attr]
            continue
        for i, image in zip(group, torch.stack([images[i] for i in group]).flip(1).unbind(0)):  # type: ignore[misc]
            images[i] = image


@dataclass
class HostBatch:
    """Batch k as read on the host, before anything is decoded or transformed: raw records of
    one size stacked into one tensor (one copy to the device), raw records of other sizes and
    encoded images one by one, with each one's place in the batch, and the batch's draws.

    A worker writes the stack and the encoded bytes into its slot (`packed`: the stack's shape and
    each encoded record's length, back to back after it) and sends the rest; `unpacked` gives them
    back as views of the slot."""

    stacked: torch.Tensor | None
    stacked_at: list[int]
    loose: list[torch.Tensor]
    loose_at: list[int]
    encoded: list[bytes | memoryview]
    encoded_at: list[int]
    labels: list[int]
    draws: list[Draw]
    names: list[str]
    #: device_decodes of each encoded record, found where the records are read (a worker).
    native: list[bool]
    packed: tuple[tuple[int, ...] | None, str, list[int]] | None = None

    def decoded(self, device: torch.device, param: caffe_pb2.TransformationParameter) -> list[torch.Tensor]:
        """The encoded records decoded on `device` (decode_jpegs), in colour or grey as `param` forces."""
        return decode_jpegs(device, self.encoded, param.force_color, param.force_gray, self.names, self.native)

    def unpacked(self, slot: np.ndarray) -> HostBatch:
        shape, dtype, lengths = self.packed
        offset = 0
        if shape is not None:
            offset = math.prod(shape) * np.dtype(dtype).itemsize
            self.stacked = torch.from_numpy(slot[:offset].view(dtype).reshape(shape))
        data = memoryview(slot)
        self.encoded = []
        for length in lengths:
            self.encoded.append(data[offset : offset + length])
            offset += length
        self.packed = None
        return self


def read_host_batch(maker: BatchMaker, k: int, slot: np.ndarray | None = None) -> HostBatch:
    """Read batch k's records and draws (cheap host work: LMDB reads and Datum parsing); with a
    `slot` the batch fits in, its stack and encoded bytes are written there (`HostBatch.packed`)."""
    items = maker.items(k)
    draws = maker.draws(k, items)
    encoded_at = [i for i, it in enumerate(items) if isinstance(it.payload, Encoded)]
    raw_at = [i for i, it in enumerate(items) if not isinstance(it.payload, Encoded)]
    encoded = [items[i].payload.data for i in encoded_at]
    native = [device_decodes(blob) for blob in encoded]
    raw = [items[i].payload for i in raw_at]
    stacked, stacked_at, loose, loose_at = None, [], [], []
    one_size = len({(a.shape, a.dtype) for a in raw}) == 1
    stack_shape, dtype = ((len(raw), *raw[0].shape), raw[0].dtype) if one_size else (None, np.dtype(np.uint8))
    stack_bytes = sum(a.nbytes for a in raw) if one_size else 0
    packed = None
    if slot is not None and stack_bytes + sum(len(b) for b in encoded) <= len(slot):
        packed, offset = (stack_shape, dtype.str, [len(b) for b in encoded]), stack_bytes
        for blob in encoded:
            slot[offset : offset + len(blob)] = np.frombuffer(blob, np.uint8)
            offset += len(blob)
        encoded = []
    if one_size:
        stack = np.stack(raw, out=None if packed is None else slot[:stack_bytes].view(dtype).reshape(stack_shape))
        stacked, stacked_at = (None if packed else torch.from_numpy(stack)), raw_at
    else:
        loose, loose_at = [torch.from_numpy(np.array(a)) for a in raw], raw_at
    return HostBatch(stacked, stacked_at, loose, loose_at, encoded, encoded_at, [it.label for it in items], draws,
                     [items[i].where for i in encoded_at], native, packed)


class HostRecords:
    """The job of GpuLoader's workers (replicate.data.pool.Job): batch k's records read, raw
    pixels stacked and JPEG bytes written into the slot (sized for the first record's pixels, as
    uint8: a JPEG is smaller), the rest of the HostBatch in the message."""

    def slot_bytes(self, maker: BatchMaker) -> int:
        try:
            item = maker.source.item(maker.source.index(maker.start, maker.seed))
            size = 3 * math.prod(item_size(item)) if isinstance(item.payload, Encoded) else item.payload.nbytes
        except ReplicateError:  # the worker that reads the record reports why
            return 0
        return maker.local_size * size

    def __call__(self, maker: BatchMaker, k: int, slot: np.ndarray | None) -> tuple[bool, HostBatch]:
        host = read_host_batch(maker, k, slot)
        return host.packed is not None, host

    def receive(self, value: HostBatch, slot: np.ndarray | None) -> HostBatch:
        return value if slot is None else value.unpacked(slot)


def _run_ahead(owner: weakref.ref, ready: queue.Queue, stop: threading.Event) -> None:
    """A GpuLoader's thread: prepare its batches in order into `ready` (a full queue waits), until
    told to stop or the loader is gone (it holds the loader only while preparing a batch)."""
    loader = owner()
    if loader is not None and loader.device.type == "cuda":
        torch.cuda.set_device(loader.device)
    while loader is not None and not stop.is_set():
        try:
            item: Any = loader._prepare()
        except BaseException as err:  # noqa: BLE001  (handed to the training thread, raised there)
            item = err
        del loader
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.2)
                break
            except queue.Full:
                if owner() is None:
                    return
        if isinstance(item, BaseException):
            return
        loader = owner()


def _next_ready(ready: queue.Queue) -> Any:
    """The GPU path's next item, waited for in slices of WAKE_S: a signal the kernel gave to
    another thread runs its handler (a second Ctrl-C's KeyboardInterrupt) only once the training
    thread is back in the interpreter (replicate.data.signals)."""
    while True:
        try:
            return ready.get(timeout=WAKE_S)
        except queue.Empty:
            pass


class GpuLoader:
    """Batches whose decoding (encoded JPEGs) and transforms run on `device`.

    The host only reads records (in this process, or ahead in worker processes: the process's
    shared `pool` or `workers` of its own, which write them into page-locked shared memory); raw
    pixels travel as uint8, a quarter of the float32 batch, on a copy stream of the loader's own;
    JPEGs are decoded on the device (decode_jpegs); crop, mirror, mean and scale run on the device as
    one gather (`DataTransformer.apply`).  A thread prepares `ahead` batches (0: each in the caller's
    thread when asked for), so that the training step never waits for the host side of loading;
    the compute stream waits for each batch's work on the device through an event.  With device
    "cpu" everything runs as it would on a GPU, with torchvision's CPU decoder in nvjpeg's place,
    which is how the tests check this path.
    """

    def __init__(self, maker: BatchMaker, device: str | torch.device = "cuda", workers: int = 0, prefetch: int = 4,
                 pool: DataPool | None = None, first: int = 0, ahead: int = 2):
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise ReplicateError("the GPU data path needs a CUDA device, and torch sees none")
        if cuda and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.maker = maker
        self.next_batch = first
        self.ahead = ahead
        self._copies = torch.cuda.Stream(self.device) if cuda else None
        #: Host batches whose copies to the device may still be running, with each one's event.
        self._in_flight: collections.deque = collections.deque()
        self._stream, self._own = (None, None) if workers == 0 and pool is None else \
            _stream(maker, HostRecords(), workers, prefetch, pool, first, pin_memory=cuda)
        self._ready: queue.Queue = queue.Queue(max(1, ahead))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self._error is not None:
            raise self._error
        if self._stop.is_set():
            raise RuntimeError("GpuLoader: next() after close() (the batches it had prepared are gone)")
        if self.ahead == 0:
            batch, done = self._prepare()
        else:
            if self._thread is None:
                if self._stream is not None:
                    self._stream.request_ahead()  # fork the workers now, before the thread runs
                self._thread = threading.Thread(target=_run_ahead, args=(weakref.ref(self), self._ready, self._stop),
                                                name="replicate-gpu-loader", daemon=True)
                self._thread.start()
            item = _next_ready(self._ready)
            if isinstance(item, BaseException):
                self._error = item
                raise item
            batch, done = item
        if done is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(done)
            batch[0].record_stream(compute)
        return batch

    def _prepare(self) -> tuple[Batch, Any]:
        """The next batch on the device, and the event its device work ends with (None on the CPU)."""
        host = next(self._stream) if self._stream is not None else read_host_batch(self.maker, self.next_batch)
        self.next_batch += 1
        if self._copies is None:
            return self._on_device(host), None
        with torch.cuda.stream(self._copies):
            batch = self._on_device(host)
            done = torch.cuda.Event()
            done.record(self._copies)
        self._in_flight.append((done, host))
        # At most `ahead` host batches wait for their copies: with the one being received, within
        # the HELD slots a stream keeps for its consumer (replicate.data.pool).
        while self._in_flight and (len(self._in_flight) > max(1, self.ahead) or self._in_flight[0][0].query()):
            self._in_flight.popleft()[0].synchronize()  # its host memory (a slot) may then be reused
        return batch, done

    def _on_device(self, host: HostBatch) -> Batch:
        stacked = None if host.stacked is None else host.stacked.to(self.device, non_blocking=True)
        if stacked is not None and len(host.stacked_at) == len(host.labels):
            return self.maker.finish(stacked, host.labels, host.draws)
        images: list[torch.Tensor | None] = [None] * len(host.labels)
        if stacked is not None:
            for i, img in zip(host.stacked_at, stacked.unbind(0)):
                images[i] = img
        for i, img in zip(host.loose_at, host.loose):
            images[i] = img.to(self.device, non_blocking=True)
        if host.encoded:
            for i, img in zip(host.encoded_at, host.decoded(self.device, self.maker.transformer.param)):
                images[i] = img
        return self.maker.finish(images, host.labels, host.draws)

    @property
    def delivered(self) -> dict[str, int] | None:
        """Batches received from workers in place and pickled (None: records read here)."""
        return None if self._stream is None else self._stream.delivered

    @property
    def pinned(self) -> bool | None:
        """Whether the workers' slots are page-locked (None: no workers, or not started yet)."""
        return None if self._stream is None else self._stream.pool.pinned

    def close(self) -> None:
        """Stop the thread, wait for the copies in flight, and stop the worker processes this
        loader started (or give up its stream of a shared pool)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        while self._in_flight:
            self._in_flight.popleft()[0].synchronize()
        _close_stream(self._stream, self._own)


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
