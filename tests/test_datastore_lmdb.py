"""Datum LMDBs: what we write reads back with Caffe's layout, keys in list order, and bad input
(missing source, LevelDB folder, corrupt record, interrupted write) is reported, not half-done."""

import os
import pickle
import re
import shutil
import threading
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from replicate.data.image import encode_jpeg
from replicate.data.lmdb_io import (
    LmdbReader,
    LmdbWriter,
    array_datum,
    datum_array,
    encoded_datum,
    make_key,
    parse_datum,
    write_lmdb,
)
from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2

GOLDEN = Path(__file__).parent / "golden" / "caffe" / "data_lmdb_mean" / "train_lmdb"


def _images(n, shape=(3, 5, 7), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_roundtrip_keys_and_layout(tmp_path):
    images = _images(12)
    names = [f"dir/img{i}.jpg" for i in range(12)]
    write_lmdb(tmp_path / "db", [(n, array_datum(img, i % 4)) for i, (n, img) in enumerate(zip(names, images))])
    # The value bytes are exactly a serialized Caffe Datum (what real Caffe parses).
    env = lmdb.open(str(tmp_path / "db"), readonly=True, lock=False)
    with env.begin() as txn:
        raw = txn.get(make_key(3, names[3]))
    env.close()
    datum = caffe_pb2.Datum.FromString(raw)
    assert datum.data == images[3].tobytes()
    reader = LmdbReader(tmp_path / "db")
    assert len(reader) == 12
    assert [reader.key(i) for i in range(12)] == [f"{i:08d}_{n}".encode() for i, n in enumerate(names)]
    for i in range(12):
        d = reader.datum(i)
        assert (d.channels, d.height, d.width, d.label, d.encoded) == (3, 5, 7, i % 4, False)
        np.testing.assert_array_equal(datum_array(d, "x"), images[i])


def test_golden_lmdb_written_by_caffe_reads():
    reader = LmdbReader(GOLDEN)
    assert len(reader) == 6
    assert reader.key(0) == b"00000000_img0"
    assert datum_array(reader.datum(5), "x").shape == (3, 10, 12)


def test_list_order_beats_name_order(tmp_path):
    names = ["zebra.jpg", "apple.jpg", "mango.jpg"]
    write_lmdb(tmp_path / "db", [(n, array_datum(img, i)) for i, (n, img) in enumerate(zip(names, _images(3)))])
    reader = LmdbReader(tmp_path / "db")
    assert [reader.datum(i).label for i in range(3)] == [0, 1, 2]


def test_encoded_and_float_records(tmp_path):
    yy, xx = np.mgrid[0:8, 0:10]
    hwc = np.stack([yy * 20, xx * 20, 100 + yy * 5], axis=2).astype(np.uint8)  # smooth: JPEG keeps it
    floats = caffe_pb2.Datum(channels=1, height=2, width=2, float_data=[0.5, 1.5, -2.0, 3.0], label=4)
    write_lmdb(tmp_path / "db", [("a.jpg", encoded_datum(encode_jpeg(hwc), 1)), ("f", floats)])
    reader = LmdbReader(tmp_path / "db")
    enc = datum_array(reader.datum(0), "x")
    assert enc.shape == (3, 8, 10) and enc.dtype == np.uint8
    assert np.abs(enc.astype(int) - hwc.transpose(2, 0, 1)).mean() < 6  # JPEG at quality 95
    assert datum_array(reader.datum(0), "x", force_gray=True).shape == (1, 8, 10)
    np.testing.assert_array_equal(datum_array(reader.datum(1), "x"), [[[0.5, 1.5], [-2.0, 3.0]]])


def test_corrupt_record_names_its_key(tmp_path):
    write_lmdb(tmp_path / "db", [(f"n{i}", array_datum(img, i)) for i, img in enumerate(_images(2))])
    env = lmdb.open(str(tmp_path / "db"))
    with env.begin(write=True) as txn:
        txn.put(make_key(1, "n1"), b"\xff\xff\xff garbage")
    env.close()
    reader = LmdbReader(tmp_path / "db")
    reader.datum(0)
    with pytest.raises(ReplicateError, match=r"\[00000001_n1\]: corrupt Datum"):
        reader.datum(1)


def test_truncated_pixels_are_corrupt():
    short = caffe_pb2.Datum(channels=3, height=4, width=4, data=b"\0" * 40).SerializeToString()
    with pytest.raises(ReplicateError, match="db\\[k\\]: corrupt Datum record \\(3x4x4 needs 48 values, holds 40\\)"):
        parse_datum(short, "db[k]")


def test_missing_and_non_lmdb_sources(tmp_path):
    with pytest.raises(ReplicateError, match="does not exist"):
        LmdbReader(tmp_path / "nope")
    (tmp_path / "leveldb").mkdir()
    with pytest.raises(ReplicateError, match="not an LMDB"):
        LmdbReader(tmp_path / "leveldb")


def test_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with LmdbWriter(tmp_path / "db") as writer:
            for i, img in enumerate(_images(3)):
                writer.put(make_key(i, "x"), array_datum(img, 0))
                if i == 1:
                    raise KeyboardInterrupt
    assert not (tmp_path / "db").exists()
    assert not (tmp_path / "db.partial").exists()


def test_partial_until_committed_then_replaces(tmp_path):
    write_lmdb(tmp_path / "db", [("old", array_datum(_images(1)[0], 9))])
    writer = LmdbWriter(tmp_path / "db")
    for i in range(1500):  # crosses a commit boundary
        writer.put(make_key(i, "x"), array_datum(_images(1, (1, 1, 1))[0], 1))
    assert (tmp_path / "db.partial").is_dir()
    assert LmdbReader(tmp_path / "db").datum(0).label == 9  # old one untouched meanwhile
    writer.commit()
    assert not (tmp_path / "db.partial").exists()
    assert len(LmdbReader(tmp_path / "db")) == 1500


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("where", ["db", "db.partial"])
def test_a_writer_replaces_only_an_lmdb_folder(tmp_path, where):
    # A user's folder at the output (or where it is built) is refused before anything is written:
    # the writer replaced any folder there (a `data prepare` root, a thesis) with its LMDB.
    victim = tmp_path / where
    (victim / "sub").mkdir(parents=True)
    (victim / "thesis.tex").write_text("years of work")
    (victim / "data.mdb").write_bytes(b"an LMDB's name, among other things")
    before = _tree(tmp_path)
    with pytest.raises(ReplicateError, match=f"^{re.escape(str(victim))}: holds sub/, thesis.tex, not only an LMDB's data.mdb "
                                             "and lock.mdb; nothing was written"):
        write_lmdb(tmp_path / "db", [("x", array_datum(_images(1)[0], 0))])
    assert _tree(tmp_path) == before


def test_a_writer_refuses_a_file_a_link_or_a_path_that_names_no_folder_before_writing(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ReplicateError, match="afile: is a file, not an LMDB folder; nothing was written"):
        LmdbWriter(tmp_path / "afile")
    write_lmdb(tmp_path / "elsewhere" / "db", [("x", array_datum(_images(1)[0], 0))])
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere" / "db")
    with pytest.raises(ReplicateError, match="link: is a symbolic link, not an LMDB folder; nothing was written"):
        LmdbWriter(tmp_path / "link")
    (tmp_path / "link").unlink()
    shutil.rmtree(tmp_path / "elsewhere")
    with pytest.raises(ReplicateError, match="afile is not a folder"):
        LmdbWriter(tmp_path / "afile" / "db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no afile.partial
    monkeypatch.chdir(tmp_path)
    for name in (".", "..", "x/.."):
        with pytest.raises(ReplicateError, match="names no new folder for the LMDB"):
            LmdbWriter(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_an_earlier_lmdb_that_came_to_hold_other_files_is_kept_and_so_is_the_new_one(tmp_path):
    write_lmdb(tmp_path / "db", [("old", array_datum(_images(1)[0], 9))])
    writer = LmdbWriter(tmp_path / "db")
    writer.put(make_key(0, "x"), array_datum(_images(1)[0], 1))
    (tmp_path / "db" / "notes.txt").write_text("written while the new LMDB was made")
    with pytest.raises(ReplicateError, match="db: holds notes.txt, .*; the new LMDB is kept in .*db.partial$"):
        writer.commit()
    assert (tmp_path / "db" / "notes.txt").read_text() == "written while the new LMDB was made"
    assert LmdbReader(tmp_path / "db").datum(0).label == 9
    assert len(LmdbReader(tmp_path / "db.partial")) == 1


def test_reader_pickles_and_reopens(tmp_path):
    write_lmdb(tmp_path / "db", [(f"n{i}", array_datum(img, i)) for i, img in enumerate(_images(4))])
    reader = LmdbReader(tmp_path / "db")
    copy = pickle.loads(pickle.dumps(reader))
    assert copy.datum(3).label == 3
    reader.close()
    assert copy.datum(2).label == 2


def test_a_process_forked_while_another_thread_reads_opens_its_own_reader(tmp_path):
    """A GpuLoader's thread may be reading records when a pool forks its workers; each worker then
    closes the environment it inherited and opens its own.  Without the module's fork lock the
    children waited forever in that close (every one of 40, when a thread read in a loop)."""
    write_lmdb(tmp_path / "db", [(f"{i:03d}", array_datum(np.zeros((3, 8, 8), np.uint8), i)) for i in range(20)])
    reader = LmdbReader(tmp_path / "db")
    stop = threading.Event()

    def read() -> None:
        i = 0
        while not stop.is_set():
            reader.datum(i % 20)
            i += 1

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    hung = 0
    try:
        for _ in range(5):
            pid = os.fork()
            if pid == 0:
                code = 0 if LmdbReader(tmp_path / "db").datum(3).label == 3 else 1
                os._exit(code)
            deadline = time.monotonic() + 20
            while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
                time.sleep(0.01)
            if not done[0]:
                hung += 1
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            else:
                assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        stop.set()
        thread.join()
    assert hung == 0, f"{hung} of 5 forked children hung opening their reader"
