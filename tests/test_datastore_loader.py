"""The loader paths compute the same batches: serial, worker processes, and the GPU path's
device-side logic (run here on CPU tensors); the GPU path's requirements fail clearly."""

import collections
import importlib.util
import signal
import threading
import time

import cv2
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from replicate.data import loader as loader_module
from replicate.data.image import decode_image, encode_jpeg
from replicate.data.loader import (
    BatchMaker, GpuLoader, SerialLoader, WorkerLoader, decode_jpegs, make_loader, read_host_batch,
)
from replicate.data.lmdb_io import array_datum, encoded_datum, write_lmdb
from replicate.data.slots import Slots
from replicate.data.sources import LmdbSource
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


def test_a_signal_taken_by_another_thread_interrupts_a_wait_for_a_batch_that_does_not_come(maker):
    """A second Ctrl-C stops a run at once (replicate.solver.requests), also while the training
    thread waits for the GPU path's thread and the kernel gave the signal to another thread (Linux
    may give it to any): here a helper thread takes it, and the batch never comes."""
    loader = GpuLoader(maker, "cpu", ahead=2)
    never = threading.Event()
    loader._prepare = lambda: never.wait(60) and None  # a read stuck on a dead file server
    stopped, freed = threading.Event(), threading.Event()

    def interrupt_from_another_thread() -> None:
        time.sleep(0.5)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        if not stopped.wait(20):  # slept through it: let the batch come, so that the test ends
            freed.set()
            never.set()

    helper = threading.Thread(target=interrupt_from_another_thread, daemon=True)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                next(loader)
            finally:
                stopped.set()
        helper.join()
        assert not freed.is_set(), "next() came back only once the batch came"
    finally:
        never.set()
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


class _Ops(TorchDispatchMode):
    """Counts the ATen operators dispatched inside it (on a GPU, each is a kernel launch)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        #: Not counting (inside the decoder's own call).
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused:
            self.counts[func._schema.name] += 1
        return func(*args, **(kwargs or {}))


def test_device_jpeg_decoding_launches_as_much_for_a_batch_of_8_as_of_2(monkeypatch):
    """Besides the decoder's own calls, what decode_jpegs does to a batch does not grow with it:
    the GPU path's loader thread launches each of those operators on the device, at ~5-10 µs of
    its time each, and has ~29 µs an image at 35,000 images/s.  (RGB -> BGR was a flip per image.)
    The images still come out BGR, those of other sizes too.  What happens inside the decoder's
    call is not counted: torchvision's CPU decoder, standing in for nvjpeg here, dispatches
    operators of its own per image in some versions (0.26: empty and permute)."""
    torchvision_io = pytest.importorskip("torchvision.io")
    decoder = torchvision_io.decode_jpeg

    def uncounted(*args, **kwargs):
        ops.paused = True
        try:
            return decoder(*args, **kwargs)
        finally:
            ops.paused = False

    monkeypatch.setattr(torchvision_io, "decode_jpeg", uncounted)
    rng = np.random.default_rng(3)
    blobs = [encode_jpeg(rng.integers(0, 256, (12, 14 + (i == 7), 3), dtype=np.uint8)) for i in range(8)]
    names = [f"{i}.jpg" for i in range(8)]
    counts = {}
    for n in (2, 8):
        with _Ops() as ops:
            decoded = decode_jpegs(torch.device("cpu"), blobs[:n], True, False, names[:n])
        counts[n] = sum(v for op, v in ops.counts.items() if op.startswith("aten::"))
        for name, blob, image in zip(names, blobs, decoded):
            np.testing.assert_array_equal(image.numpy(), decode_image(blob, True, name).transpose(2, 0, 1), name)
    # The 8 include an image of its own size: the one of a kind is flipped alone.
    assert counts[8] <= counts[2] + 1, counts


def test_the_workers_find_which_records_the_device_decodes(tmp_path, monkeypatch):
    """The JPEG header walk that picks the device decoder's records (~3 µs an image) runs where the
    records are read, in a worker, not again in the loader thread; a PNG saved as .jpg and a cut
    JPEG are marked for the CPU's decoder."""
    pytest.importorskip("torchvision")
    hwc = np.random.default_rng(4).integers(0, 256, (10, 11, 3), dtype=np.uint8)
    whole = encode_jpeg(hwc)
    png = cv2.imencode(".png", hwc)[1].tobytes()
    records = [("a.jpg", whole), ("b.jpg", png), ("c.jpg", whole[:-20])]
    write_lmdb(tmp_path / "enc", [(k, encoded_datum(v, i)) for i, (k, v) in enumerate(records)])

    def maker(batch_size: int) -> BatchMaker:
        param = caffe_pb2.TransformationParameter(force_color=True)
        return BatchMaker(LmdbSource(tmp_path / "enc"), DataTransformer(param, TRAIN), batch_size, seed=0)

    three, two = maker(3), maker(2)
    try:
        assert read_host_batch(three, 0).native == [True, False, False]
        host = read_host_batch(two, 0)
        monkeypatch.setattr(loader_module, "device_decodes", lambda blob: pytest.fail("header walked again"))
        data, _ = GpuLoader(two, "cpu", ahead=0)._on_device(host)
        torch.testing.assert_close(data, next(SerialLoader(two))[0], rtol=0, atol=0)
    finally:
        three.source.close()
        two.source.close()
