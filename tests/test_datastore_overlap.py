"""Loading overlaps the training step: with a batch read and a step of known cost (sleeps, which
release the GIL as I/O and GPU waits do), a loop takes about max(read, step) per step, not their
sum.  The bar sits halfway between the two, a generous margin on a loaded 2-core machine that a
loader without overlap still misses (the last test).  The 90% goal itself is measured by
`python -m replicate.bench.overlap`, a benchmark, not here."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicate.bench.overlap import PATHS, slow_maker, small_lmdb, steps_per_s

READ_S, BATCH, STEP_S, STEPS = 0.06, 2, 0.08, 5
LOAD_S = READ_S * BATCH
#: Halfway between overlapped (max) and one after the other (sum).
BAR_S = max(LOAD_S, STEP_S) + min(LOAD_S, STEP_S) / 2


@pytest.fixture(scope="module")
def lmdb(tmp_path_factory) -> Path:
    return small_lmdb(tmp_path_factory.mktemp("overlap"))


def _seconds_per_step(path: str, lmdb: Path, read_s: float = READ_S, step_s: float = STEP_S) -> float:
    loader = PATHS[path](slow_maker(lmdb, read_s, BATCH))
    try:
        return 1 / steps_per_s(loader, step_s, STEPS)
    finally:
        if hasattr(loader, "close"):
            loader.close()


@pytest.mark.parametrize("path", ["workers", "gpu path", "gpu path + workers"])
def test_loading_overlaps_the_step(lmdb: Path, path: str) -> None:
    assert _seconds_per_step(path, lmdb) < BAR_S


def test_the_gpu_paths_thread_also_overlaps_a_step_slower_than_loading(lmdb: Path) -> None:
    read_s, step_s = 0.02, 0.12
    assert _seconds_per_step("gpu path", lmdb, read_s, step_s) < step_s + read_s * BATCH / 2


@pytest.mark.parametrize("path", ["gpu path, no overlap"])
def test_without_overlap_the_step_waits_for_loading(lmdb: Path, path: str) -> None:
    assert _seconds_per_step(path, lmdb) >= BAR_S
