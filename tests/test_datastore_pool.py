"""One worker pool per process, sized by the CPUs it may use; JPEG decoding on the device with the
CPU for what the device decoder cannot take (torchvision's CPU decoder stands in for nvjpeg)."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from solver_support import copy_run
from test_solver_snapshots import _children

from replicate.data.cpus import available_cpus
from replicate.data.image import jpeg_components
from replicate.data.loader import BatchMaker, GpuLoader, SerialLoader, WorkerLoader
from replicate.data.lmdb_io import encoded_datum, write_lmdb
from replicate.data.pool import DataPool, Stream, workers_per_process
from replicate.data.sources import LmdbSource
from replicate.data.transform import TRAIN, DataTransformer
from replicate.errors import ReplicateError
from replicate.io.model import load_solver
from replicate.proto import caffe_pb2
from replicate.solver.log import RunLog
from replicate.solver.solver import Solver


def _image(mode: str, fmt: str = "JPEG", seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (11, 13, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(out, format=fmt, quality=85)
    return out.getvalue()


ODD = {"rgb.jpg": _image("RGB"), "cmyk.jpg": _image("CMYK"), "gray.jpg": _image("L"),
       "png.JPEG": _image("RGB", "PNG"), "rgb2.jpg": _image("RGB", seed=1)}


@pytest.fixture
def odd_maker(tmp_path: Path):
    write_lmdb(tmp_path / "odd", [(name, encoded_datum(data, i)) for i, (name, data) in enumerate(ODD.items())])
    param = caffe_pb2.TransformationParameter(crop_size=9, mirror=True, scale=0.5, force_color=True)
    return BatchMaker(LmdbSource(tmp_path / "odd"), DataTransformer(param, TRAIN), batch_size=5, seed=3)


def _same(a, b) -> None:
    for (da, la), (db, lb) in zip(a, b):
        assert torch.equal(da, db) and torch.equal(la, lb)


def test_jpeg_components_tell_what_the_device_decoder_gets() -> None:
    assert [jpeg_components(data) for data in ODD.values()] == [3, 4, 1, 0, 3]
    assert jpeg_components(b"\xff\xd8\xff") == 0


def test_device_decoding_of_odd_files_equals_the_reference(odd_maker) -> None:
    _same([next(GpuLoader(odd_maker, "cpu")) for _ in range(1)], [next(SerialLoader(odd_maker))])
    loader = GpuLoader(odd_maker, "cpu", workers=2)
    try:
        _same([next(loader) for _ in range(3)], [odd_maker.make(k) for k in range(3)])
    finally:
        loader.close()


def test_what_the_device_decoder_refuses_is_decoded_on_the_cpu(odd_maker, monkeypatch) -> None:
    import torchvision.io

    decode, refused = torchvision.io.decode_jpeg, []

    def refuses_greyscale(data, mode, device):
        one = [data] if isinstance(data, torch.Tensor) else data
        if any(len(d) == len(ODD["gray.jpg"]) for d in one):
            refused.append(len(one))
            raise RuntimeError("nvjpeg: unsupported")
        return decode(data, mode=mode, device=device)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", refuses_greyscale)
    _same([next(GpuLoader(odd_maker, "cpu", ahead=0))], [next(SerialLoader(odd_maker))])
    assert refused == [3, 1]  # the batch, then the grey one alone; it was decoded on the CPU


def test_one_pool_serves_the_train_and_test_nets(tmp_path: Path) -> None:
    run = copy_run(tmp_path, "run")
    param = load_solver(run / "solver.prototxt")
    param.snapshot_prefix = str(run / "snap")
    # Children other tests left behind (multiprocessing's resource tracker, a pool still being
    # reaped) are not this solver's: count only the ones it adds.
    before = set(_children())
    solver = Solver(param, run, torch.device("cpu"), RunLog(None, False), data_workers=2)
    try:
        assert solver.data_feed == {"data_path": "cpu", "data_workers": 2}
        solver.forward_backward()
        solver.test(0)
        assert len(set(_children()) - before) == 2  # not 2 per data layer
    finally:
        solver.close()
    assert set(_children()) - before == set()


def test_a_workers_error_reaches_the_layer_as_its_message(tmp_path: Path) -> None:
    write_lmdb(tmp_path / "bad", [("a.jpg", encoded_datum(b"not an image", 0))])
    param = caffe_pb2.TransformationParameter()
    maker = BatchMaker(LmdbSource(tmp_path / "bad"), DataTransformer(param, TRAIN), batch_size=1, seed=0)
    loader = WorkerLoader(maker, workers=1)
    try:
        with pytest.raises(ReplicateError, match=r"bad\[00000000_a.jpg\]: cannot read image size"):
            next(loader)
    finally:
        loader.close()


def test_workers_come_from_the_cpus_this_process_may_use(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(os, "cpu_count", lambda: 256)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert available_cpus() == 8 and workers_per_process() == 7
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert available_cpus() == 6 and workers_per_process() == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert workers_per_process() == 2


def _raw_maker(folder: Path, batch: int = 3):
    from replicate.data.lmdb_io import array_datum

    images = np.random.default_rng(0).integers(0, 256, (7, 3, 12, 13), dtype=np.uint8)
    write_lmdb(folder / "db", [(f"{i:05d}", array_datum(img, i)) for i, img in enumerate(images)])
    param = caffe_pb2.TransformationParameter(crop_size=9, mirror=True)
    return BatchMaker(LmdbSource(folder / "db"), DataTransformer(param, TRAIN), batch_size=batch, seed=42)


def test_a_process_that_leaves_its_workers_running_still_exits(tmp_path: Path) -> None:
    """The workers ignore SIGTERM, which multiprocessing sends its daemon children at exit before
    it joins them: a loader never closed (`replicate test` left one) hung the exit there."""
    import subprocess
    import sys

    _raw_maker(tmp_path)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\n"
        "from test_datastore_pool import _raw_maker\n"
        "from replicate.data.loader import WorkerLoader\n"
        "loader = WorkerLoader(_raw_maker(Path(sys.argv[2])), workers=1, prefetch=2)\n"
        "next(loader)\n"
        "print('leaving', flush=True)\n"
    )
    (tmp_path / "db2").mkdir()
    done = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path / "db2")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "leaving" in done.stdout, done.stderr


class _FailingAt1(BatchMaker):
    def make(self, k, out=None):
        if k == 1:
            raise ReplicateError("bad record in batch 1")
        return super().make(k, out)


def test_next_after_a_workers_error_raises_it_again_like_the_serial_path(tmp_path: Path) -> None:
    """Batch 1's error came once and the stream then waited for a batch nobody was asked for."""
    base = _raw_maker(tmp_path)
    failing = _FailingAt1(base.source, base.transformer, 3, 42)
    loader = WorkerLoader(failing, workers=1, prefetch=2)
    try:
        next(loader)
        for _ in range(2):
            got = _in_thread(lambda: next(loader))  # a thread: without the fix the second next() waits forever
            assert isinstance(got, ReplicateError) and "bad record in batch 1" in str(got), got
    finally:
        loader.close()


def _started(call) -> tuple[threading.Thread, list]:
    """`call()` running in a thread of its own; the list gets what it returned or raised."""
    out: list = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as err:  # noqa: BLE001
            out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _in_thread(call, seconds: float = 30):
    """What `call()` returned or raised, or "still waiting" after `seconds` (a hang)."""
    thread, out = _started(call)
    thread.join(seconds)
    return out[0] if out else "still waiting"


class _Nothing:
    def reopen(self) -> None:
        pass


class _NoMaker:
    source = _Nothing()


class _Whole:
    """A job whose batch of `size` bytes always travels pickled (no slot), after `delay` seconds."""

    def __init__(self, size: int, delay: float = 0.0):
        self.size, self.delay = size, delay

    def slot_bytes(self, maker) -> int:
        return 0

    def __call__(self, maker, k, slot):
        time.sleep(self.delay)
        return False, np.full(self.size, k % 251, np.uint8)

    def receive(self, value, slot):
        return value


def test_a_worker_killed_in_the_middle_of_a_batch_is_reported_not_waited_for() -> None:
    """The out-of-memory killer takes a worker while it sends a large pickled batch: half of it
    is in the pipe.  With one queue for all workers the consumer waited in recv for the rest for
    ever; with a pipe per worker it sees the worker gone."""
    pool = DataPool(1)
    stream = Stream(pool, _NoMaker(), _Whole(50 << 20), prefetch=1)
    try:
        stream.request_ahead()
        time.sleep(1.5)  # the worker pickled its batch and filled the pipe; nobody reads yet
        (worker,) = pool._processes
        os.kill(worker.pid, signal.SIGKILL)
        got = _in_thread(lambda: next(stream))
        assert isinstance(got, ReplicateError), got
        assert str(got) == "a data worker process died (exit code -9; killed: out of memory?)"
    finally:
        pool.close()


def test_a_restart_while_a_consumer_waits_is_a_restart_not_a_death(monkeypatch) -> None:
    """A new stream registering restarts the workers while another stream's consumer waits.  The
    restart used to count itself only after killing the workers: a consumer that looked in between
    reported a dead worker.  The window is widened here to make it certain."""
    import replicate.data.pool as pool_module

    kill = pool_module._kill

    def slow_kill(processes) -> None:
        kill(processes)
        time.sleep(1.2)  # more than the consumer's 0.5 s wait

    pool = DataPool(1)
    stream = Stream(pool, _NoMaker(), _Whole(1000, delay=1.0), prefetch=1)
    try:
        stream.request_ahead()
        waiting, got = _started(lambda: next(stream))
        time.sleep(0.3)
        monkeypatch.setattr(pool_module, "_kill", slow_kill)
        Stream(pool, _NoMaker(), _Whole(10), prefetch=1)  # registering restarts the workers
        waiting.join(60)
        assert got and isinstance(got[0], np.ndarray), got
        assert len(got[0]) == 1000 and (got[0] == 0).all()
    finally:
        pool.close()


def test_pickled_batches_of_every_worker_arrive_whole_and_in_order() -> None:
    """Batches much larger than a pipe holds, from several workers at once, each through its own
    pipe: the consumer reassembles each one whole and hands them out in order."""
    pool = DataPool(2)
    stream = Stream(pool, _NoMaker(), _Whole(3 << 20), prefetch=3)
    try:
        for k in range(8):
            batch = next(stream)
            assert len(batch) == 3 << 20 and (batch == k % 251).all()
        assert stream.delivered == {"in_place": 0, "pickled": 8}
    finally:
        pool.close()


class _Tensor(_Whole):
    """A batch that is a tensor: pickled, it travels in shared memory whose file the consumer
    fetches from the worker as it unpickles."""

    def __call__(self, maker, k, slot):
        return False, torch.full((self.size,), float(k))


def test_a_whole_batch_whose_worker_is_gone_is_lost_with_it_not_a_connection_error() -> None:
    """The message is all in the pipe, but its tensor's file must be fetched from the worker, now
    dead: that was a ConnectionRefusedError in the training loop."""
    pool = DataPool(1)
    stream = Stream(pool, _NoMaker(), _Tensor(1000), prefetch=1)
    try:
        stream.request_ahead()
        time.sleep(1.0)
        os.kill(pool._processes[0].pid, signal.SIGKILL)
        got = _in_thread(lambda: next(stream))
        assert isinstance(got, ReplicateError) and "a data worker process died (exit code -9" in str(got), got
    finally:
        pool.close()



class _ForksAHelper(_Whole):
    """Batch 0 forks a process that outlives the worker (as a fork without exec in a job would):
    it holds the worker's pipes and its multiprocessing sentinel open after the worker dies."""

    def __init__(self, size: int, pid_file: Path):
        super().__init__(size, delay=2.0)
        self.pid_file = pid_file

    def __call__(self, maker, k, slot):
        if k == 0:
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            self.pid_file.write_text(str(pid))
        return super().__call__(maker, k, slot)


def test_a_dead_worker_is_reported_while_a_process_it_forked_holds_its_pipes(tmp_path: Path) -> None:
    pool = DataPool(1)
    stream = Stream(pool, _NoMaker(), _ForksAHelper(1000, tmp_path / "helper"), prefetch=1)
    try:
        assert (_in_thread(lambda: next(stream)) == 0).all()
        os.kill(pool._processes[0].pid, signal.SIGKILL)  # the out-of-memory killer, during batch 1
        got = _in_thread(lambda: next(stream), 20)
        assert isinstance(got, ReplicateError) and "a data worker process died (exit code -9" in str(got), got
    finally:
        pool.close()
        os.kill(int((tmp_path / "helper").read_text()), signal.SIGKILL)


def test_workers_forked_for_a_thread_that_ends_outlive_it() -> None:
    """After a restart the first stream to ask forks the workers, here from a thread that then
    ends.  They died with it (PR_SET_PDEATHSIG names the thread that forked), and the other stream
    reported a dead worker."""
    pool = DataPool(2)
    train = Stream(pool, _NoMaker(), _Whole(100), prefetch=2)
    try:
        assert (next(train) == 0).all()
        test = Stream(pool, _NoMaker(), _Whole(100), prefetch=2)  # a restart
        assert (_in_thread(lambda: next(test)) == 0).all()  # asked first, from a thread now gone
        time.sleep(0.5)
        assert all(p.is_alive() for p in pool._processes)
        got = _in_thread(lambda: next(train))
        assert isinstance(got, np.ndarray) and (got == 1).all(), got
    finally:
        pool.close()


_PARENT = os.getpid()


def _rebuilt(k: int) -> int:
    if os.getpid() == _PARENT and k == 1:
        raise ValueError("cannot rebuild batch 1")
    return k


class _BadOne:
    """A batch the consumer cannot rebuild (as when fetching a tensor's file fails: EMFILE)."""

    def __init__(self, k: int):
        self.k = k

    def __reduce__(self):
        return _rebuilt, (self.k,)


class _BadSecond(_Whole):
    def __call__(self, maker, k, slot):
        return False, _BadOne(k)


def test_a_batch_that_cannot_be_received_is_an_error_after_the_batches_before_it() -> None:
    pool = DataPool(1)
    stream = Stream(pool, _NoMaker(), _BadSecond(0), prefetch=3)
    try:
        stream.request_ahead()
        time.sleep(1.0)  # batches 0, 1, 2 all in the pipe
        got = [_in_thread(lambda: next(stream), 10) for _ in range(3)]
        assert got[0] == 0, got
        for error in got[1:]:  # the same error again, never a wait
            assert isinstance(error, ReplicateError), got
            assert str(error) == "a batch from a data worker could not be received: ValueError('cannot rebuild batch 1')"
    finally:
        pool.close()


_FILES = """
import os, resource, sys
sys.path.insert(0, sys.argv[1])
from test_datastore_pool import _NoMaker, _Whole
from replicate.data.pool import DataPool, Stream
from replicate.errors import ReplicateError
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), int(sys.argv[3])))
pool = DataPool(int(sys.argv[4]))
streams = [Stream(pool, _NoMaker(), _Whole(10), prefetch=1) for _ in range(2)]
before = len(os.listdir("/proc/self/fd"))
try:
    print("batch", next(streams[0])[0], "limit raised", resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 128)
except ReplicateError as err:
    print("error:", err)
print("workers", len(pool._processes))
pool.close()
print("files", len(os.listdir("/proc/self/fd")) - before)
"""


@pytest.mark.parametrize("hard, expected", [
    (4096, "batch 0 limit raised True\nworkers 40\nfiles 0\n"),
    (128, "error: the data workers need 122 more open files than this process may have (ulimit -n: 128, at most 128): "
          "use fewer data workers (--data-workers)\nworkers 0\nfiles 0\n"),
])
def test_a_pool_makes_room_for_its_pipes_or_says_it_cannot(hard: int, expected: str) -> None:
    """40 workers for 2 data layers keep 40 x 3 files open.  Under `ulimit -n 128` the pool raises
    its soft limit towards the hard one; where the hard one is too low it says so before forking."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FILES, str(Path(__file__).parent), "128", str(hard), "40"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(expected), done.stdout


def test_a_process_that_exits_while_its_workers_send_large_batches_exits_quietly() -> None:
    """The pipes' read ends used to be closed at exit before the workers were killed: each worker
    still sending then printed a BrokenPipeError traceback."""
    import subprocess
    import sys

    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1])\n"
        "from test_datastore_pool import _NoMaker, _Whole\n"
        "from replicate.data.pool import DataPool, Stream\n"
        "stream = Stream(DataPool(2), _NoMaker(), _Whole(1 << 20, 0.05), prefetch=6)\n"
        "next(stream)\n"
        "time.sleep(0.3)\n"  # the workers have more queued for the pipe than it holds
        "print('leaving', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "leaving" in done.stdout, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
