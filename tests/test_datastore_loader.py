"""The loader paths compute the same batches: serial, worker processes, and the GPU path's
device-side logic (run here on CPU tensors); the GPU path's requirements fail clearly."""

import importlib.util

import numpy as np
import pytest
import torch

from replicate.data.image import encode_jpeg
from replicate.data.loader import BatchMaker, GpuLoader, LmdbSource, SerialLoader, WorkerLoader, make_loader
from replicate.data.lmdb_io import array_datum, encoded_datum, write_lmdb
from replicate.data.slots import Slots
from replicate.data.transform import TRAIN, DataTransformer
from replicate.errors import ReplicateError
from replicate.io.binary import write_mean
from replicate.proto import caffe_pb2


@pytest.fixture
def maker(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 3, 12, 13), dtype=np.uint8)
    write_lmdb(tmp_path / "db", [(f"{i}", array_datum(img, i)) for i, img in enumerate(images)])
    write_mean(tmp_path / "mean.binaryproto", images.mean(axis=0, keepdims=True))
    param = caffe_pb2.TransformationParameter(
        crop_size=9, mirror=True, scale=0.5, mean_file=str(tmp_path / "mean.binaryproto")
    )
    return BatchMaker(LmdbSource(tmp_path / "db"), DataTransformer(param, TRAIN), batch_size=3, seed=42)


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def _same(a, b):
    for (da, la), (db, lb) in zip(a, b):
        torch.testing.assert_close(da, db, rtol=0, atol=0)
        torch.testing.assert_close(la, lb, rtol=0, atol=0)


def test_batches_depend_only_on_seed_and_number(maker):
    first = _take(SerialLoader(maker), 4)
    assert [b[1].tolist() for b in first] == [[0, 1, 2], [3, 4, 5], [6, 0, 1], [2, 3, 4]]
    _same(first, _take(SerialLoader(maker), 4))
    np.testing.assert_array_equal(maker.make(2)[0].numpy(), first[2][0].numpy())


def test_worker_loader_matches_serial(maker):
    """Bit for bit, and every batch written by its worker into shared memory (none pickled)."""
    loader = WorkerLoader(maker, workers=2, prefetch=4)
    try:
        _same(_take(loader, 6), _take(SerialLoader(maker), 6))
        assert loader.delivered == {"in_place": 6, "pickled": 0}
    finally:
        loader.close()


def test_a_slot_takes_the_next_batch_once_the_last_tensor_on_it_is_gone():
    """What makes handing out shared memory safe: any view of a lent slot keeps it lent."""
    slots = Slots(1, 4096)
    slot = slots.take()
    view = torch.from_numpy(slots.lend(slot)[:16].view(np.float32))[1:3]
    assert slots.take() is None
    del view
    assert slots.take() == slot


def test_worker_slots_are_reused_by_a_consumer_that_drops_its_batches(maker):
    """A training loop holds a batch or two at a time: after 20 batches of 7 slots, none was pickled."""
    loader = WorkerLoader(maker, workers=1, prefetch=4)
    serial = SerialLoader(maker)
    try:
        for _ in range(20):
            _same([next(loader)], [next(serial)])
        assert loader.delivered == {"in_place": 20, "pickled": 0}
    finally:
        loader.close()


def test_batches_beyond_the_slots_a_consumer_keeps_arrive_pickled_and_equal(maker):
    loader = WorkerLoader(maker, workers=2, prefetch=4)
    try:
        _same(_take(loader, 12), _take(SerialLoader(maker), 12))
        assert loader.delivered["in_place"] >= 4 and loader.delivered["pickled"] >= 1
        assert sum(loader.delivered.values()) == 12
    finally:
        loader.close()


def test_gpu_path_logic_on_cpu_matches_serial(maker):
    _same(_take(GpuLoader(maker, "cpu"), 5), _take(SerialLoader(maker), 5))
    assert isinstance(make_loader(maker, workers=0), SerialLoader)


def test_gpu_path_with_reading_workers_matches_serial(maker):
    loader = GpuLoader(maker, "cpu", workers=2, prefetch=4)
    try:
        _same(_take(loader, 6), _take(SerialLoader(maker), 6))
        assert loader.delivered["in_place"] >= 6 and loader.delivered["pickled"] == 0
    finally:
        loader.close()


def test_gpu_path_reads_jpeg_records_into_shared_memory(tmp_path):
    """Encoded records travel back to back in the slot and decode to the serial path's batches."""
    pytest.importorskip("torchvision")
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 14, 15, 3), dtype=np.uint8)
    write_lmdb(tmp_path / "enc", [(f"{i}", encoded_datum(encode_jpeg(im), i)) for i, im in enumerate(images)])
    param = caffe_pb2.TransformationParameter(crop_size=11, mirror=True)
    enc = BatchMaker(LmdbSource(tmp_path / "enc"), DataTransformer(param, TRAIN), batch_size=2, seed=5)
    loader = GpuLoader(enc, "cpu", workers=1, prefetch=2)
    try:
        _same(_take(loader, 4), _take(SerialLoader(enc), 4))
        assert loader.delivered["in_place"] >= 4 and loader.delivered["pickled"] == 0
    finally:
        loader.close()


@pytest.mark.parametrize("make", [
    lambda m: SerialLoader(m, first=4),
    lambda m: WorkerLoader(m, workers=2, prefetch=2, first=4),
    lambda m: GpuLoader(m, "cpu", first=4),
    lambda m: GpuLoader(m, "cpu", workers=1, prefetch=2, first=4),
], ids=["serial", "workers", "gpu-path", "gpu-path-workers"])
def test_every_path_can_start_at_a_later_batch(maker, make):
    """A resumed run's loaders start at the batch the snapshot recorded."""
    loader = make(maker)
    try:
        _same(_take(loader, 3), _take(SerialLoader(maker), 7)[4:])
    finally:
        if hasattr(loader, "close"):
            loader.close()


def test_gpu_path_handles_records_of_other_sizes(tmp_path):
    """A batch mixing raw records of two sizes: each goes to the device on its own and is
    cropped at its own offsets, as the serial path does."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (3, 10 + i % 2, 12), dtype=np.uint8) for i in range(5)]
    write_lmdb(tmp_path / "mixed", [(f"{i}", array_datum(img, i)) for i, img in enumerate(images)])
    param = caffe_pb2.TransformationParameter(crop_size=8, mirror=True)
    mixed = BatchMaker(LmdbSource(tmp_path / "mixed"), DataTransformer(param, TRAIN), batch_size=4, seed=3)
    _same(_take(GpuLoader(mixed, "cpu"), 3), _take(SerialLoader(mixed), 3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_path_without_cuda_says_so(maker):
    with pytest.raises(ReplicateError, match="needs a CUDA device"):
        make_loader(maker, device="cuda")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision installed")
def test_gpu_jpeg_decoding_without_torchvision_says_so(tmp_path):
    hwc = np.full((10, 10, 3), 90, np.uint8)
    write_lmdb(tmp_path / "enc", [("a.jpg", encoded_datum(encode_jpeg(hwc), 0))])
    param = caffe_pb2.TransformationParameter()
    enc = BatchMaker(LmdbSource(tmp_path / "enc"), DataTransformer(param, TRAIN), batch_size=1, seed=0)
    with pytest.raises(ReplicateError, match="needs torchvision"):
        next(GpuLoader(enc, "cpu"))
