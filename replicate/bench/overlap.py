"""Does loading overlap the training step?  Measured with costs known in advance, on any machine.

A source whose every record takes `read_s` to read and a step that takes `step_s`, both sleeps
(which release the GIL, as a disk read, a copy or a wait for the GPU does): a loader path that
overlaps the two delivers a step every max(batch read, step) seconds, one that does not every
batch read + step.  Issue 20's goal for end to end is at least 90% of the slower one's pace.  What
a real step's host work costs on top is the GPU session's to measure (benchmarks/gpu_session.sh).

  python -m replicate.bench.overlap      # every loader path, loader slower and step slower
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from replicate.data.item import Item
from replicate.data.loader import BatchMaker, GpuLoader, SerialLoader, WorkerLoader
from replicate.data.lmdb_io import array_datum, write_lmdb
from replicate.data.sources import LmdbSource, Source
from replicate.data.transform import TRAIN, DataTransformer
from replicate.proto import caffe_pb2


class SlowSource:
    """`source` whose records each take `read_s` seconds to read (a sleep before the real read)."""

    def __init__(self, source: Source, read_s: float):
        self.source = source
        self.read_s = read_s

    def __len__(self) -> int:
        return len(self.source)

    def index(self, position: int, seed: int) -> int:
        return self.source.index(position, seed)

    def item(self, index: int) -> Item:
        time.sleep(self.read_s)
        return self.source.item(index)

    def reopen(self) -> None:
        self.source.reopen()

    def close(self) -> None:
        self.source.close()

    def identity(self) -> str:
        return self.source.identity()


def small_lmdb(folder: Path, records: int = 8) -> Path:
    """An LMDB of `records` random 3 x 12 x 12 raw images (the costs here are the sleeps)."""
    images = np.random.default_rng(0).integers(0, 256, (records, 3, 12, 12), dtype=np.uint8)
    write_lmdb(folder / "db", [(f"{i}", array_datum(image, i)) for i, image in enumerate(images)])
    return folder / "db"


def slow_maker(lmdb: Path, read_s: float, batch_size: int) -> BatchMaker:
    param = caffe_pb2.TransformationParameter(crop_size=10, mirror=True)
    return BatchMaker(SlowSource(LmdbSource(lmdb), read_s), DataTransformer(param, TRAIN), batch_size, seed=0)


#: The loader paths, by name: what `make_loader` builds for a data layer on the CPU and on a GPU
#: (the GPU path's logic run on the CPU), and the GPU path with its overlap thread turned off.
PATHS = {
    "serial": lambda maker: SerialLoader(maker),
    "workers": lambda maker: WorkerLoader(maker, workers=1),
    "gpu path": lambda maker: GpuLoader(maker, "cpu"),
    "gpu path + workers": lambda maker: GpuLoader(maker, "cpu", workers=1),
    "gpu path, no overlap": lambda maker: GpuLoader(maker, "cpu", ahead=0),
}


def steps_per_s(loader: Any, step_s: float, steps: int) -> float:
    """Steps per second of a loop that takes a batch, then steps for `step_s`; the first batch
    (workers forking, the thread starting) is not timed."""
    next(loader)
    start = time.perf_counter()
    for _ in range(steps):
        next(loader)
        time.sleep(step_s)
    return steps / (time.perf_counter() - start)


def measure(path: str, lmdb: Path, read_s: float, step_s: float, batch_size: int, steps: int) -> dict[str, Any]:
    """One path's steps/s and its share of the slower part's pace."""
    loader = PATHS[path](slow_maker(lmdb, read_s, batch_size))
    try:
        rate = steps_per_s(loader, step_s, steps)
    finally:
        if hasattr(loader, "close"):
            loader.close()
    slower = max(read_s * batch_size, step_s)
    return {"path": path, "batch_read_s": read_s * batch_size, "step_s": step_s, "steps_per_s": rate,
            "of_slower": rate * slower, "serial_would_be": slower / (read_s * batch_size + step_s)}


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        lmdb = small_lmdb(Path(folder))
        for read_s, step_s in ((0.06, 0.08), (0.03, 0.12)):
            for path in PATHS:
                r = measure(path, lmdb, read_s, step_s, batch_size=2, steps=10)
                verdict = "met" if r["of_slower"] >= 0.9 else "not met"
                print(f"{path:22s} batch read {r['batch_read_s'] * 1000:3.0f} ms, step {r['step_s'] * 1000:3.0f} ms: "
                      f"{r['steps_per_s']:5.2f} steps/s = {r['of_slower']:.0%} of the slower part's pace "
                      f"(>= 90%: {verdict}; without overlap {r['serial_would_be']:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
