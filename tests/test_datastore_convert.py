"""`data convert` (convert_imageset) and `data mean` (compute_image_mean) from the command line."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from replicate.cli import main
from replicate.data.convert import ConvertOptions
from replicate.data.convert import convert as convert_entries
from replicate.data.image import read_image, resize_linear
from replicate.data.lmdb_io import LmdbReader, datum_array, write_lmdb
from replicate.data.mean import compute_mean
from replicate.errors import ReplicateError
from replicate.io.binary import read_binary, read_mean
from replicate.proto import caffe_pb2

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(9)
    root = tmp_path / "root"
    (root / "cls").mkdir(parents=True)
    lines = []
    for i in range(6):
        name = f"cls/im{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (15 + i, 18, 3), dtype=np.uint8)).save(root / name)
        lines.append(f"{name} {i % 3}")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    lines[3:3] = ["missing.jpg 1", "broken.jpg 2"]
    (tmp_path / "files.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def convert(tmp, *extra):
    return main(["data", "convert", "--list", str(tmp / "files.txt"), "--root", str(tmp / "root"),
                 "--out", str(tmp / "out" / "lmdb"), "--workers", "1", *extra])


def test_convert_writes_resized_bgr_records_in_list_order(images, capsys):
    assert convert(images, "--resize", "8", "10") == 0
    out = capsys.readouterr()
    assert "wrote" in out.out and "6 records, 2 images skipped" in out.out
    assert "missing.jpg: cannot read" in out.err and "broken.jpg: cannot decode" in out.err
    reader = LmdbReader(images / "out" / "lmdb")
    lines = (images / "files.txt").read_text().splitlines()
    kept = [(i, line.rsplit(" ", 1)) for i, line in enumerate(lines) if "cls/" in line]
    assert [reader.key(j) for j in range(len(reader))] == [f"{i:08d}_{n}".encode() for i, (n, _) in kept]
    for j, (_, (name, label)) in enumerate(kept):
        datum = reader.datum(j)
        assert datum.label == int(label) and not datum.encoded
        expected = resize_linear(read_image(images / "root" / name), 8, 10).transpose(2, 0, 1)
        np.testing.assert_array_equal(datum_array(datum, "x"), expected)
    assert not (images / "out" / "lmdb.partial").exists()


def test_parallel_workers_write_the_same_lmdb(images):
    assert convert(images, "--resize", "8", "10") == 0
    serial = LmdbReader(images / "out" / "lmdb")
    first = [serial.datum(i).SerializeToString() for i in range(len(serial))]
    shutil.move(images / "out" / "lmdb", images / "serial")
    args = ["data", "convert", "--list", str(images / "files.txt"), "--root", str(images / "root"),
            "--out", str(images / "out" / "lmdb"), "--workers", "2", "--resize", "8", "10"]
    assert main(args) == 0
    parallel = LmdbReader(images / "out" / "lmdb")
    assert [parallel.datum(i).SerializeToString() for i in range(len(parallel))] == first


def test_strict_stops_and_leaves_no_lmdb(images, capsys):
    assert convert(images, "--strict") == 2
    assert "missing.jpg: cannot read" in capsys.readouterr().err
    assert not (images / "out" / "lmdb").exists() and not (images / "out" / "lmdb.partial").exists()


def test_encoded_keeps_jpeg_bytes_without_resize(images):
    assert convert(images, "--encoded", "--resize", "0", "0") == 0
    reader = LmdbReader(images / "out" / "lmdb")
    assert reader.datum(0).encoded
    assert reader.datum(0).data == (images / "root" / "cls" / "im0.jpg").read_bytes()
    assert reader.datum(1).data == (images / "root" / "cls" / "im1.png").read_bytes()  # a PNG stays one


def test_encoded_with_resize_reencodes(images):
    assert convert(images, "--encoded", "--resize", "12", "12") == 0
    datum = LmdbReader(images / "out" / "lmdb").datum(0)
    assert datum.encoded and datum_array(datum, "x").shape == (3, 12, 12)


def test_non_integer_labels_stop_with_the_line(images, capsys):
    (images / "files.txt").write_text("cls/im0.jpg 0\ncls/im1.png cat\n")
    assert convert(images) == 2
    assert "files.txt:2: expected '<path> <integer label>'" in capsys.readouterr().err
    assert not (images / "out").exists()


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(("out", "error"), [
    ("victim", "victim: holds sub/, thesis.tex, not only an LMDB's data.mdb and lock.mdb; nothing was written"),
    ("afile", "afile: is a file, not an LMDB folder; nothing was written"),
    ("afile/lmdb", "afile/lmdb: "),
    (".", ".: names no new folder for the LMDB"),
    ("root", "root: is the image root being read (root)"),
    ("root/cls/lmdb", "root/cls/lmdb: is inside the image root being read (root)"),
])
def test_convert_refuses_an_out_that_is_no_lmdb_folder_before_writing(images, monkeypatch, capsys, out, error):
    # `--out` replaced whatever folder was there (a thesis, the image root itself); a file or `.`
    # gave a traceback, and a file left `afile.partial` behind.
    monkeypatch.chdir(images)
    (images / "victim" / "sub").mkdir(parents=True)
    (images / "victim" / "thesis.tex").write_text("years of work")
    (images / "afile").write_text("mine")
    before = _tree(images)
    assert main(["data", "convert", "--list", "files.txt", "--root", "root", "--workers", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {error}") and err.count("\n") == 1, err
    assert out != "afile/lmdb" or err.endswith(f"{images / 'afile'} is not a folder\n"), err
    assert _tree(images) == before


def test_convert_refuses_an_out_holding_the_list(images, capsys):
    (images / "out").mkdir()
    shutil.copy(images / "files.txt", images / "out" / "files.txt")
    assert main(["data", "convert", "--list", str(images / "out" / "files.txt"), "--root", str(images / "root"),
                 "--out", str(images / "out"), "--workers", "1"]) == 2
    assert capsys.readouterr().err == (f"error: {images / 'out'}: holds the image list being read "
                                      f"({images / 'out' / 'files.txt'}); give another output\n")
    assert sorted(p.name for p in (images / "out").iterdir()) == ["files.txt"]


def test_convert_replaces_an_earlier_lmdb(images):
    assert convert(images, "--resize", "8", "10") == 0
    assert convert(images, "--resize", "4", "5") == 0
    reader = LmdbReader(images / "out" / "lmdb")
    assert datum_array(reader.datum(0), "x").shape == (3, 4, 5)
    assert sorted(p.name for p in (images / "out").iterdir()) == ["lmdb"]


def test_mean_creates_the_out_folder_and_refuses_an_out_it_cannot_write_before_reading(images, capsys):
    assert convert(images, "--resize", "8", "10") == 0
    capsys.readouterr()
    lmdb_folder = images / "out" / "lmdb"
    (images / "afile").write_text("mine")
    before = _tree(images)
    for out, error in [(lmdb_folder / "data.mdb", f"is inside the LMDB being read ({lmdb_folder})"),
                       (lmdb_folder, f"is the LMDB being read ({lmdb_folder})"),
                       (images / "root", "is a folder; give the mean file's path"),
                       (images / "afile" / "m.binaryproto", f"{images / 'afile'} is not a folder")]:
        assert main(["data", "mean", str(lmdb_folder), "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error: {out}: {error}"), captured.err
        assert "mean of" not in captured.err  # refused before the LMDB was read
    assert _tree(images) == before
    # A missing parent folder is created, as `data convert` creates its OUT's.
    assert main(["data", "mean", str(lmdb_folder), "--out", str(images / "new" / "sub" / "m.binaryproto")]) == 0
    assert read_mean(images / "new" / "sub" / "m.binaryproto").shape == (1, 3, 8, 10)


@pytest.mark.parametrize("case", ["caffe/data_lmdb_mean", "caffe_train_e2e"])
def test_mean_command_writes_caffes_mean(case, tmp_path):
    root = GOLDEN / case
    assert main(["data", "mean", str(root / "train_lmdb"), "--out", str(tmp_path / "mean.binaryproto")]) == 0
    np.testing.assert_array_equal(read_mean(tmp_path / "mean.binaryproto"), read_mean(root / "mean.binaryproto"))
    blob = read_binary(tmp_path / "mean.binaryproto", caffe_pb2.BlobProto())
    assert not blob.HasField("shape") and blob.num == 1  # legacy dims, as compute_image_mean writes


def test_mean_of_converted_lmdb(images, tmp_path):
    assert convert(images, "--resize", "8", "10") == 0
    assert main(["data", "mean", str(images / "out" / "lmdb"), "--out", str(tmp_path / "m.binaryproto")]) == 0
    reader = LmdbReader(images / "out" / "lmdb")
    stack = np.stack([datum_array(reader.datum(i), "x") for i in range(len(reader))]).astype(np.float32)
    np.testing.assert_allclose(read_mean(tmp_path / "m.binaryproto")[0], stack.mean(axis=0), rtol=1e-6)


def test_mean_accumulates_in_float32_like_caffe(tmp_path):
    # compute_image_mean adds into the float32 BlobProto data: 2^24 + 1 rounds back to 2^24.
    records = [caffe_pb2.Datum(channels=1, height=1, width=1, float_data=[v]) for v in (2.0**24, 1.0, 1.0, 1.0)]
    write_lmdb(tmp_path / "db", [(str(i), d) for i, d in enumerate(records)])
    assert compute_mean(tmp_path / "db")[0, 0, 0, 0] == np.float32(2.0**24 / 4)  # a double sum gives 4194304.75


def test_mean_needs_equal_sizes(tmp_path):
    records = [caffe_pb2.Datum(channels=1, height=1, width=w, data=bytes(w)) for w in (2, 3)]
    write_lmdb(tmp_path / "db", [(str(i), d) for i, d in enumerate(records)])
    with pytest.raises(ReplicateError, match="00000001_1\\]: record is 1x1x3, the first was 1x1x2"):
        compute_mean(tmp_path / "db")


def test_shuffle_stores_a_seeded_permutation_of_the_list(images, capsys):
    assert convert(images, "--resize", "8", "10", "--shuffle", "--seed", "3") == 0
    reader = LmdbReader(images / "out" / "lmdb")
    names = [reader.key(j).decode().split("_", 1)[1] for j in range(len(reader))]
    listed = [line.rsplit(" ", 1)[0] for line in (images / "files.txt").read_text().splitlines() if "cls/" in line]
    assert sorted(names) == sorted(listed) and names != listed
    keys_first = [reader.key(j) for j in range(len(reader))]
    reader.close()
    shutil.rmtree(images / "out")
    assert convert(images, "--resize", "8", "10", "--shuffle", "--seed", "3") == 0
    again = LmdbReader(images / "out" / "lmdb")
    assert [again.key(j) for j in range(len(again))] == keys_first


def test_ctrl_c_stops_a_parallel_conversion_with_one_line_and_keeps_the_earlier_lmdb(images):
    # Ctrl-C signals the whole foreground group.  Pool workers each printed a KeyboardInterrupt
    # traceback; ours ignore it, the parent stops, kills them and removes its partial LMDB.  A FIFO
    # in the list holds one worker in open() until the signal, so the stop comes mid-conversion.
    os.mkfifo(images / "root" / "stall.jpg")
    lines = (images / "files.txt").read_text().splitlines()
    (images / "files.txt").write_text("\n".join(lines[:2] + ["stall.jpg 0"] + lines[2:]) + "\n")
    out = images / "out" / "lmdb"
    out.mkdir(parents=True)
    (out / "data.mdb").write_bytes(b"an earlier conversion")
    process = subprocess.Popen(
        [sys.executable, "-m", "replicate", "data", "convert", "--list", str(images / "files.txt"),
         "--root", str(images / "root"), "--out", str(out), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (images / "out" / "lmdb.partial").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the workers have their jobs; one waits in open("stall.jpg")
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err
    assert not (images / "out" / "lmdb.partial").exists()
    assert (out / "data.mdb").read_bytes() == b"an earlier conversion"
    # No worker outlived it (a zombie is dead, waiting for a reaper outside our control).  The
    # workers are killed and reaped before the parent exits; multiprocessing's resource tracker,
    # in the same group, exits on its own once it sees the parent gone: it is given 10 s.
    deadline = time.monotonic() + 10
    while True:
        group = subprocess.run(["ps", "-o", "stat=,args=", "-g", str(process.pid)], capture_output=True,
                               text=True).stdout
        if all(line.strip().startswith("Z") for line in group.splitlines()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(line.strip().startswith("Z") for line in group.splitlines()), group


def test_a_signal_taken_by_another_thread_still_stops_a_conversion_waiting_on_a_stalled_worker(images):
    # Linux may give a signal sent to a process to any of its threads that does not block it
    # (signal(7); a conversion has numpy's OpenBLAS threads), and Python runs the handler in the
    # main thread only once that thread is back in the interpreter.  Ctrl-C delivered to such a
    # thread (tgkill) left `data convert` waiting for ever on a worker stalled in open() (the FIFO
    # here; a file server that does not answer).  Here a helper thread takes the SIGINT itself.
    fifo = images / "root" / "stall.jpg"
    os.mkfifo(fifo)
    entries = [("cls/im0.jpg", 0), ("stall.jpg", 0), ("cls/im2.jpg", 2)]
    out = images / "lmdb"
    stopped, freed = threading.Event(), threading.Event()

    def interrupt_from_another_thread() -> None:
        deadline = time.monotonic() + 60
        while not (images / "lmdb.partial").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # a worker waits in open("stall.jpg"), the main thread for its result
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        if not stopped.wait(20):  # slept through it: free the worker, so that the test ends
            freed.set()
            with contextlib.suppress(OSError):  # ENXIO: nobody holds the FIFO open any more
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    helper = threading.Thread(target=interrupt_from_another_thread, daemon=True)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        try:
            convert_entries(entries, out, ConvertOptions(root=str(images / "root")), workers=2, show_progress=False)
        finally:
            stopped.set()
    helper.join()
    assert not freed.is_set(), "the conversion stopped only once its stalled worker was freed"
    assert not (images / "lmdb.partial").exists() and not out.exists()


@pytest.mark.parametrize("line, error", [
    ("cls/im0.jpg 1_000", "files.txt:1: expected '<path> <integer label>'"),  # int() reads 1000, atoi 1
    ("cls/im0.jpg 4294967296", "files.txt:1: label 4294967296 does not fit a Datum's int32 label"),
])
def test_labels_atoi_would_misread_are_refused(images, capsys, line, error):
    (images / "files.txt").write_text(line + "\n")
    assert convert(images) == 2
    assert error in capsys.readouterr().err


@pytest.mark.parametrize("extra, error", [
    (["--encoded", "--check-size"], "--check-size compares the sizes of raw records"),
    (["--encode-type", "foo"], "--encode-type foo: OpenCV"),
])
def test_encodings_caffe_aborts_on_are_refused_before_writing(images, capsys, extra, error):
    assert convert(images, *extra) == 2
    assert error in capsys.readouterr().err
    assert not (images / "out").exists()


def test_encoded_names_without_a_format_are_refused_before_writing(images, capsys):
    (images / "root" / "noext").write_bytes((images / "root" / "cls" / "im0.jpg").read_bytes())
    (images / "files.txt").write_text("cls/im0.jpg 0\nnoext 1\n")
    assert convert(images, "--encoded") == 2
    assert "noext: no extension, which OpenCV" in capsys.readouterr().err
    assert not (images / "out").exists()


def test_check_size_stops_at_a_record_of_another_size(images, capsys):
    assert convert(images, "--resize", "0", "0", "--check-size") == 2
    assert "record is 3x16x18, the first was 3x15x18 (--check-size)" in capsys.readouterr().err
    assert not (images / "out" / "lmdb").exists() and not (images / "out" / "lmdb.partial").exists()
