"""The Data layer: batches of Datum records from an LMDB, transformed as Caffe's DataTransformer.

Its `source` may also be a view of a store (`data prepare`: a set folder holding view.json): the
same records in the view's order, as from the LMDB `data export-lmdb` writes of it.

Like Caffe's DataLayer it has no bottoms, one or two tops (data, and label when asked for), reads
records in key order and wraps around at the end of the LMDB, and shapes its data top from the
batch size and the first record (after the crop).  A missing source or mean file stops when the
layer is built, before any training starts.  `forward()` returns CPU tensors (the net moves them);
`configure(device="cuda")` switches to the GPU data path, whose images are already on the device
(its labels stay on the host, where the net checks their range before moving them).

Random crops and mirrors are drawn from a seed taken from torch's default generator when the layer
is built (so `torch.manual_seed` makes a run repeatable); `configure(seed=...)` sets it directly.
Batch k depends only on the source, the seed, the first record and k, so `position()` (seed, first
record, batches read) is all a snapshot needs to save, and `seek()` continues exactly there.
Worker processes: `configure(workers=N)`, or the environment variable REPLICATE_DATA_WORKERS.
In a data-parallel run (torch.distributed initialised, N processes) batch_size is the global batch:
each process's tops hold its 1/N slice of every global batch (`BatchMaker` shard).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from replicate.data.loader import BatchMaker, make_loader, process_shard
from replicate.data.pool import DataPool
from replicate.data.sources import LmdbSource, Source
from replicate.data.transform import DataTransformer
from replicate.data.view import ViewSource, is_view
from replicate.errors import ReplicateError
from replicate.layers.base import Layer, Shape, register
from replicate.layers.eager import not_compiled
from replicate.proto import caffe_pb2


class BatchLayer(Layer):
    """What Data and ImageData share: a BatchMaker over a source, a loader, and the tops."""

    min_bottoms = 0
    max_bottoms = 0

    def _check_upgraded(self, params) -> None:
        """Legacy transform fields belong in transform_param after replicate.io.upgrade; left in
        place they would silently do nothing here, so a net that skipped the upgrade stops."""
        legacy = [f for f in ("scale", "mean_file", "crop_size", "mirror") if params.HasField(f)]
        if legacy:
            raise self.error(
                f"legacy {params.DESCRIPTOR.name} fields {', '.join(legacy)}: load the net through the "
                "upgrade (replicate.io.upgrade), which moves them into transform_param"
            )

    def _setup(self, param: caffe_pb2.LayerParameter, source: Source, batch_size: int, rand_skip: int, prefetch: int) -> None:
        if len(param.top) not in (1, 2):
            raise self.error(f"has 1 or 2 tops (data, label), not {len(param.top)}")
        if batch_size <= 0:
            raise self.error("batch_size must be positive")
        self.transformer = DataTransformer(param.transform_param, self.phase, where=self.where)
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        start = int(np.random.default_rng([seed, 2]).integers(rand_skip)) if rand_skip else 0
        self.maker = BatchMaker(source, self.transformer, batch_size, seed, start, process_shard())
        try:
            shape = self.maker.output_shape()
        except ReplicateError as err:
            raise self.error(str(err)) from None
        local = self.maker.local_size
        self.top_shapes = [(local, *shape)]
        if len(param.top) == 2:
            self.top_shapes.append((local,))
        self.prefetch = prefetch
        workers = os.environ.get("REPLICATE_DATA_WORKERS", "0") or "0"
        if not workers.isdigit():
            raise ReplicateError(f"REPLICATE_DATA_WORKERS={workers!r}: expected a number of worker processes")
        self.workers = int(workers)
        self.device: str | None = None
        #: Batches handed out so far: the number of the next one.
        self.batches_read = 0
        self.pool: DataPool | None = None
        self._loader = None

    def configure(self, seed: int | None = None, workers: int | None = None, device: str | None = None,
                  pool: DataPool | None = None) -> None:
        """Choose the random seed, the number of worker processes or the GPU path (device
        "cuda..."), or the process's shared worker `pool` (replicate.data.pool; the loader joins it
        now), before the first forward; the batches themselves do not depend on the path."""
        if self._loader is not None:
            raise RuntimeError(f"layer '{self.name}': configure() after the first batch")
        if seed is not None:
            self.maker.seed = seed
        if workers is not None:
            self.workers = workers
        if device is not None:
            self.device = device
        if pool is not None:
            self.pool, self.workers = pool, pool.workers
            self._loader = make_loader(self.maker, self.workers, self.prefetch, self.device, pool)

    def position(self) -> dict[str, int | str]:
        """Where this layer stands in its source: all a snapshot needs to continue it exactly, and
        what the source was (`Source.identity`)."""
        return {"seed": self.maker.seed, "start": self.maker.start, "batch": self.batches_read,
                "source": self.maker.source.identity()}

    def seek(self, position: dict[str, int | str]) -> None:
        """Continue from a `position()` (a resumed run); the next forward reads its batch.  A
        source other than the one the position was taken in is refused (positions of older
        snapshots do not say)."""
        now = self.maker.source.identity()
        if position.get("source", now) != now:
            raise self.error(f"its source changed since the snapshot (then: {position['source']}; now: {now}); "
                             "resumed, the run would read other batches than the run it continues")
        self.close()
        self.maker.seed, self.maker.start = int(position["seed"]), int(position["start"])
        self.batches_read = int(position["batch"])

    def close(self) -> None:
        """Stop the loader's worker processes and release the source's files (a later forward
        starts a new loader where this one stopped and reopens them)."""
        if self._loader is not None and hasattr(self._loader, "close"):
            self._loader.close()
        self._loader = None
        self.maker.source.close()

    @not_compiled
    def forward(self) -> tuple[torch.Tensor, ...]:
        # Reading and decoding is Python I/O: torch.compile of a net runs it as it is.
        if self._loader is None:
            self._loader = make_loader(self.maker, self.workers, self.prefetch, self.device, self.pool,
                                       self.batches_read)
        try:
            data, label = next(self._loader)
        except ReplicateError as err:
            # An unreadable record or a worker that died: say which layer's source it was.
            raise self.error(str(err)) from None
        self.batches_read += 1
        return (data, label) if len(self.top_shapes) == 2 else (data,)


@register("Data")
class Data(BatchLayer):
    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        dp = param.data_param
        self._check_upgraded(dp)
        if not dp.source:
            raise self.error("data_param.source is not set")
        try:
            source = ViewSource(dp.source) if is_view(dp.source) else LmdbSource(dp.source)
        except ReplicateError as err:
            raise self.error(str(err)) from None
        try:
            self._setup(param, source, int(dp.batch_size), int(dp.rand_skip), int(dp.prefetch))
        except BaseException:
            source.close()  # a layer that is never built is never closed
            raise
