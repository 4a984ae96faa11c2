"""Snapshots: written behind the loop byte for byte as before, pruned by --snapshot-keep, and a
train() that leaves no handle open (on Caffe's e2e fixture: real LMDBs, Data layers, a test net)."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from solver_support import copy_run

from replicate.data import lmdb_io
from replicate.data.ilsvrc import Images
from replicate.data.lmdb_io import LmdbReader, datum_array
from replicate.data.store import Store, StoreOptions, build_store
from replicate.data.view import write_view
from replicate.io.blobs import blob_shape
from replicate.io.model import load_caffemodel
from replicate.proto import caffe_pb2
from replicate.solver.run import train
from replicate.solver.snapshot_writer import prune


def _old_blob(array: np.ndarray, blob: caffe_pb2.BlobProto) -> None:
    """How blobs were written before the fast path: element by element."""
    blob.shape.dim.extend(int(d) for d in array.shape)
    blob.data.extend(np.ascontiguousarray(array, dtype=np.float32).ravel().tolist())


def test_snapshot_files_are_byte_identical_to_element_wise_serialization(tmp_path: Path) -> None:
    run = copy_run(tmp_path, "run", {"max_iter: 20": "max_iter: 3", "snapshot: 10": "snapshot: 0"})
    result = train(run / "solver.prototxt", echo=False)
    model = run / "snap_iter_3.caffemodel"
    assert result.last_snapshot == run / "snap_iter_3.solverstate"
    written = load_caffemodel(model)
    # Rebuild both files from the values they hold, the old (slow) way, and compare the bytes.
    net = caffe_pb2.NetParameter()
    net.CopyFrom(written)
    for layer in net.layer:
        values = [np.asarray(b.data, np.float32).reshape(blob_shape(b)) for b in layer.blobs]
        del layer.blobs[:]
        for v in values:
            _old_blob(v, layer.blobs.add())
    assert model.read_bytes() == net.SerializeToString()
    state = caffe_pb2.SolverState()
    state.ParseFromString(result.last_snapshot.read_bytes())
    old = caffe_pb2.SolverState(iter=state.iter, learned_net=state.learned_net, current_step=state.current_step)
    for h in state.history:
        _old_blob(np.asarray(h.data, np.float32).reshape(blob_shape(h)), old.history.add())
    assert result.last_snapshot.read_bytes() == old.SerializeToString()
    assert sum(len(b.data) for layer in written.layer for b in layer.blobs) > 0


def _snapshots(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "_iter_" in p.name)


def test_keep_leaves_the_last_k_and_the_final_snapshot(tmp_path: Path) -> None:
    edits = {"max_iter: 20": "max_iter: 10", "snapshot: 10": "snapshot: 3"}
    run = copy_run(tmp_path, "keep2", edits)
    train(run / "solver.prototxt", echo=False, snapshot_keep=2)
    assert _snapshots(run) == [f"snap_iter_{i}.{e}" for i in (10, 9)
                               for e in ("caffemodel", "solverstate", "solverstate.resume.json")]
    run = copy_run(tmp_path, "all", edits)
    train(run / "solver.prototxt", echo=False)  # Caffe's default: everything stays
    assert len(_snapshots(run)) == 12


def test_prune_spares_the_final_snapshot_and_newer_ones(tmp_path: Path) -> None:
    for i in (2, 4, 6, 8, 10):
        for ext in ("caffemodel", "solverstate", "solverstate.resume.json"):
            (tmp_path / f"snap_iter_{i}.{ext}").write_text("x")
    removed = prune(tmp_path / "snap", keep=1, current=6, final=2)
    assert {p.name for p in removed} == {f"snap_iter_4.{e}" for e in ("caffemodel", "solverstate", "solverstate.resume.json")}
    # What a resume looks for goes first, the weights last: never a state without its other files.
    assert [p.name for p in removed] == [f"snap_iter_4.{e}" for e in ("solverstate", "solverstate.resume.json", "caffemodel")]
    assert prune(tmp_path / "snap", keep=0, current=10, final=10) == []
    left = {2, 6, 8, 10}  # 2 was spared as the final one
    assert {p.name.split(".")[0] for p in prune(tmp_path / "snap", keep=3, current=10, final=10)} == {"snap_iter_2"}
    assert {int(p.name.split("_")[2].split(".")[0]) for p in tmp_path.iterdir()} == left - {2}


def test_a_failed_background_write_stops_training_with_the_error(tmp_path: Path) -> None:
    run = copy_run(tmp_path, "run", {"max_iter: 20": "max_iter: 4", "snapshot: 10": "snapshot: 2"})
    (run / "snap_iter_2.caffemodel").mkdir()  # the rename onto it fails
    with pytest.raises(IsADirectoryError):
        train(run / "solver.prototxt", echo=False)
    assert not (run / "snap_iter_2.solverstate").exists()  # no state names missing weights


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _as_views(run: Path) -> None:
    """Put the fixture's LMDB records into a store (as lossless PNGs, kept at their size) and point
    its nets at views of it."""
    parts = []
    for part, db in (("train", "train_lmdb"), ("val", "val_lmdb")):
        reader = LmdbReader(run / db)
        (run / part).mkdir()
        entries = []
        for i in range(len(reader)):
            datum = reader.datum(i)
            pixels = datum_array(datum, "")[::-1].transpose(1, 2, 0)
            Image.fromarray(np.ascontiguousarray(pixels)).save(run / part / f"{i}.png")
            entries.append((f"{i}.png", int(datum.label)))
        reader.close()
        n = len(entries)
        parts.append((part, Images([e[0] for e in entries], np.array([e[1] for e in entries]),
                                   [str(run / part / e[0]) for e in entries], np.arange(n), np.zeros(n, np.int64),
                                   np.full(n, -1, np.int64))))
    build_store(run / "store", parts, StoreOptions("raw", None), show_progress=False)
    store = Store(run / "store")
    for part, images in parts:
        (run / f"{part}_view").mkdir()
        write_view(run / f"{part}_view", part, images.image_list(part), part, store, store.records_of(part), 0)
    store.close()
    for net, db in (("train.prototxt", "train_lmdb"), ("val.prototxt", "val_lmdb")):
        text = (run / net).read_text()
        (run / net).write_text(text.replace(f'source: "{db}"', f'source: "{db.replace("_lmdb", "_view")}"'))


@pytest.mark.parametrize("workers,views", [(0, False), (2, False), (2, True)])
def test_ten_trainings_in_one_process_leave_nothing_open(tmp_path: Path, workers: int, views: bool) -> None:
    run = copy_run(tmp_path, "run", {"max_iter: 20": "max_iter: 2", "test_interval: 5": "test_interval: 2",
                                     "snapshot: 10": "snapshot: 0"})
    if views:
        _as_views(run)
        assert "train_view" in (run / "train.prototxt").read_text()
    # Earlier tests' garbage (an LMDB environment in a reference cycle holds files open) goes now,
    # not when a collection happens to run between two of the trainings below.
    gc.collect()
    before = (len(lmdb_io._ENVS), threading.active_count(), len(_children()))
    counts = []
    for _ in range(10):
        train(run / "solver.prototxt", echo=False, data_workers=workers, force=True)  # again in one folder
        counts.append((_open_fds(), len(lmdb_io._ENVS), threading.active_count(), len(_children())))
    assert counts[0][1:] == before
    assert len(set(counts)) == 1, counts


def _children() -> list[str]:
    """This process's live child processes."""
    me = str(os.getpid())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[1] == me and fields[0] != "Z":
            found.append(pid)
    return found


def test_a_failed_solver_build_closes_the_nets_it_built(tmp_path: Path) -> None:
    run = copy_run(tmp_path, "run")
    text = (run / "val.prototxt").read_text()
    (run / "val.prototxt").write_text(text.replace('mean_file: "mean.binaryproto"', 'mean_file: "nope.binaryproto"'))
    before = len(lmdb_io._ENVS)
    for _ in range(3):
        with pytest.raises(Exception, match="nope.binaryproto"):
            train(run / "solver.prototxt", echo=False)
        assert len(lmdb_io._ENVS) == before
