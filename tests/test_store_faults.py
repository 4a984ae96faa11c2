"""`data prepare` and `export-lmdb` on damaged input, a full disk and signals: nothing is lost or
dropped without an error, and what was done is kept for the rerun (miniature ILSVRC2012 of
tests/ilsvrc_support.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from ilsvrc_support import WNIDS, make_ilsvrc
from PIL import Image

from replicate.cli import main
from replicate.data import space as space_module
from replicate.data import store as store_module
from replicate.data.complete import Expected, check_devkit_total
from replicate.data.families import ILSVRC12_WNIDS
from replicate.data.ilsvrc import train_images
from replicate.data.store import StoreOptions, build_store
from replicate.errors import ReplicateError

QUICK = ["--resize", "8", "8", "--workers", "1", "--splits", "0", "--reduced", ""]
CLASS0 = WNIDS[0]  # 5 images, its tar's members in this order: truncated, png, gray, cmyk, _1


@pytest.fixture(scope="module")
def ilsvrc(tmp_path_factory: pytest.TempPathFactory):
    return make_ilsvrc(tmp_path_factory.mktemp("ilsvrc"))


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def _cut(data: bytes, where: str) -> bytes:
    """A tar cut after its second member at the 512-byte header boundary, or inside its third."""
    third = _members(data)[2]
    return data[: third.offset] if where == "header" else data[: third.offset_data + 10]


def _damaged_train(ilsvrc, tmp_path: Path, layout: str, where: str) -> Path:
    """The training images with class 0's tar cut, as the tar of class tars or as their folder."""
    with tarfile.open(ilsvrc.train_tar) as outer:
        tars = [(m.name, outer.extractfile(m).read()) for m in outer.getmembers()]
    tars = [(name, _cut(data, where) if name == f"{CLASS0}.tar" else data) for name, data in tars]
    if layout == "folder":
        (tmp_path / "train").mkdir()
        for name, data in tars:
            (tmp_path / "train" / name).write_bytes(data)
        return tmp_path / "train"
    with tarfile.open(tmp_path / "train.tar", "w") as outer:
        for name, data in tars:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            outer.addfile(info, io.BytesIO(data))
    return tmp_path / "train.tar"


def _class0_tar(ilsvrc) -> bytes:
    with tarfile.open(ilsvrc.train_tar) as outer:
        return outer.extractfile(f"{CLASS0}.tar").read()


def _prepare(ilsvrc, out: Path, *args: str) -> int:
    return main(["data", "prepare", "--devkit", str(ilsvrc.devkit), "--synsets", str(ilsvrc.synsets),
                 "--out", str(out), *QUICK, *args])


@pytest.mark.parametrize("layout", ["nested", "folder"])
@pytest.mark.parametrize("where", ["header", "member"])
def test_a_cut_class_tar_is_an_error_naming_class_counts_and_member(ilsvrc, tmp_path, capsys, layout, where) -> None:
    source = _damaged_train(ilsvrc, tmp_path, layout, where)
    assert _prepare(ilsvrc, tmp_path / "out", "--train", str(source)) == 2
    size = _members(_class0_tar(ilsvrc))[2].size
    cut = ("cut after n01440764_png.JPEG (no end-of-archive block)" if where == "header"
           else f"cut inside n01440764_gray.JPEG (10 of its {size:,} bytes)")
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: train class 0 ({CLASS0}) has 2 images, 5 expected: {CLASS0}.tar {cut}. Nothing was written to "
        f"{tmp_path / 'out' / 'store'}; to go on without these images, accept them by class: --accept-gap {CLASS0}")
    assert not (tmp_path / "out").exists()


def test_an_accepted_gap_is_listed_in_the_store_and_in_every_view_of_its_class(ilsvrc, tmp_path, capsys) -> None:
    source = _damaged_train(ilsvrc, tmp_path, "nested", "header")
    out = tmp_path / "out"
    assert _prepare(ilsvrc, out, "--train", str(source), "--accept-gap", CLASS0, "--splits", "1") == 0
    gaps = json.loads((out / "store" / "store.json").read_text())["gaps"]
    assert [(g["part"], g["wnid"], g["label"], g["expected"], g["found"]) for g in gaps] == [("train", CLASS0, 0, 5, 1)]
    assert gaps[0]["why"].startswith(f"{CLASS0}.tar cut after n01440764_png.JPEG") and "truncated.JPEG failed" in gaps[0]["why"]
    with_class0 = {name: json.loads((out / name / "view.json").read_text()).get("gaps")
                   for name in ("whole_train", "halfnatmanA_train", "halfnatmanB_train")}
    assert with_class0 == {"whole_train": gaps, "halfnatmanA_train": gaps, "halfnatmanB_train": None}  # tench: natural
    assert f"accepted gap: train class 0 ({CLASS0}) has 1 images, 5 expected" in capsys.readouterr().err


def test_images_that_fail_are_an_error_after_decoding_and_the_rerun_that_accepts_them_decodes_nothing(
        ilsvrc, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert _prepare(ilsvrc, out, "--train", str(ilsvrc.train_tar)) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"error: train class 0 ({CLASS0}) has 4 images, 5 expected: "
                          "n01440764/n01440764_truncated.JPEG failed (cannot decode image")
    assert f"The 43 images made are kept in {out / 'store.partial'} for a rerun" in err
    assert not (out / "store").exists()
    assert _prepare(ilsvrc, out, "--train", str(ilsvrc.train_tar), "--accept-gap", CLASS0) == 0
    assert "decoded" not in capsys.readouterr().err  # nothing was left to decode
    assert json.loads((out / "store" / "store.json").read_text())["records"] == 43


def test_a_cut_validation_tar_names_the_missing_images(ilsvrc, tmp_path, capsys) -> None:
    data = ilsvrc.val_tar.read_bytes()
    last = _members(data)[-1]
    (tmp_path / "val.tar").write_bytes(data[: last.offset_data + 10])
    assert _prepare(ilsvrc, tmp_path / "out", "--val", str(tmp_path / "val.tar")) == 2
    label = dict(ilsvrc.val)[last.name]
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f"error: val class {label} ({WNIDS[label]}) has 0 images, 1 expected: missing {last.name} (val.tar cut inside "
        f"{last.name} (10 of its {last.size:,} bytes)). Nothing was written")


def test_ilsvrc2012_devkit_counts_must_add_up_to_its_totals() -> None:
    wnids = ILSVRC12_WNIDS.read_text().split()
    counts = np.full(1000, 1281, np.int64)
    counts[:167] += 1
    check_devkit_total(wnids, "train", counts, "meta.mat")  # 1,281,167
    counts[0] -= 1
    with pytest.raises(ReplicateError, match="meta.mat: 1,281,166 train images in all, ILSVRC2012 has 1,281,167"):
        check_devkit_total(wnids, "train", counts, "meta.mat")
    check_devkit_total(WNIDS, "train", counts[:40], "meta.mat")  # another class list: no total to match


def test_prepare_and_export_refuse_in_one_line_when_the_disk_lacks_the_space(ilsvrc, tmp_path, capsys,
                                                                             monkeypatch) -> None:
    real = space_module.shutil.disk_usage
    free = {"bytes": 10_000}
    monkeypatch.setattr(space_module.shutil, "disk_usage", lambda p: real(p)._replace(free=free["bytes"]))
    out = tmp_path / "out"
    assert _prepare(ilsvrc, out, "--train", str(ilsvrc.train_tar), "--accept-gap", CLASS0) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {out}: the store of 44 images (raw) and the views needs ~14.7 KB more and {tmp_path} has 10.0 KB "
        "free; free space or write elsewhere")  # 44 x 192 bytes of pixels, 2 x 22 of index, names, 64 of views
    assert not out.exists()
    free["bytes"] = 10**12
    assert _prepare(ilsvrc, out, "--train", str(ilsvrc.train_tar), "--accept-gap", CLASS0) == 0
    free["bytes"] = 10_000
    assert main(["data", "export-lmdb", str(out / "whole_train"), str(tmp_path / "lmdb")]) == 2
    assert capsys.readouterr().err.endswith("the LMDB of 43 records needs ~1.1 MB more and "
                                            f"{tmp_path / 'lmdb.partial'} has 10.0 KB free; free space or write elsewhere\n")
    assert not (tmp_path / "lmdb.partial").exists()


class _SmallDisk:
    """A data file on a disk that fills after `room` bytes: a write that does not fit writes what
    fits, then fails with ENOSPC, as write(2) does."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.room = 0
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def test_a_full_disk_is_one_line_and_the_rerun_resumes_to_the_same_store(ilsvrc, tmp_path, monkeypatch) -> None:
    train = train_images(ilsvrc.train_tar, WNIDS)
    options = StoreOptions("raw", (8, 8))
    expected = Expected.listed([("train", train.labels)], WNIDS)

    def build(out: Path):
        return build_store(out, [("train", train)], options, show_progress=False, expected=expected, accept={CLASS0})

    build(tmp_path / "whole")
    monkeypatch.setattr(store_module, "CHUNK", 4)
    monkeypatch.setattr(store_module, "FLUSH_EVERY", 8)
    init = store_module._Partial.__init__

    def on_a_small_disk(self, folder, meta):
        init(self, folder, meta)
        self.data = _SmallDisk(self.data, 20 * 192 + 100)  # room for 20 records and half of one

    monkeypatch.setattr(store_module._Partial, "__init__", on_a_small_disk)
    with pytest.raises(ReplicateError) as stopped:
        build(tmp_path / "resumed")
    assert str(stopped.value) == (f"{tmp_path / 'resumed.partial'}: No space left on device after 16 of 44 images; "
                                  f"they are kept in {tmp_path / 'resumed.partial'}: run the same command again to "
                                  "resume, once there is space")
    monkeypatch.setattr(store_module._Partial, "__init__", init)
    assert build(tmp_path / "resumed").resumed_at == 16
    for name in ("data.bin", "index.npy", "names.txt", "failed.txt"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_a_build_resumes_from_the_rows_whose_bytes_are_on_disk(ilsvrc, tmp_path, monkeypatch) -> None:
    # A crash can leave index rows (written in another file) that point past the data file's end:
    # they are dropped on resuming, never read as zeros.
    train = train_images(ilsvrc.train_tar, WNIDS)
    options = StoreOptions("raw", (8, 8))
    expected = Expected.listed([("train", train.labels)], WNIDS)
    build = lambda out: build_store(out, [("train", train)], options, show_progress=False,  # noqa: E731
                                    expected=expected, accept={CLASS0})
    build(tmp_path / "whole")
    monkeypatch.setattr(store_module, "CHUNK", 4)
    monkeypatch.setattr(store_module, "FLUSH_EVERY", 8)
    calls = []
    encode = store_module.encode_chunk

    def stop_at_the_fifth(job):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return encode(job)

    monkeypatch.setattr(store_module, "encode_chunk", stop_at_the_fifth)
    with pytest.raises(ReplicateError, match="stopped after 16 of 44"):
        build(tmp_path / "resumed")
    partial = tmp_path / "resumed.partial"
    with open(partial / "data.bin", "r+b") as f:
        f.truncate(10 * 192 + 50)  # the last 5 records never reached the disk
    monkeypatch.setattr(store_module, "encode_chunk", encode)
    assert build(tmp_path / "resumed").resumed_at == 11  # 10 records and the truncated image's failed row
    assert (tmp_path / "resumed" / "data.bin").read_bytes() == (tmp_path / "whole" / "data.bin").read_bytes()


def _list_with_a_fifo(tmp_path: Path, n: int = 200, at: int = 100) -> list[str]:
    """A Caffe list of `n` tiny images of 2 classes whose image `at` is a FIFO: a worker that reads
    it waits there (until the test opens its other end and closes it), so a build is caught
    mid-way every time.  Returns `data prepare`'s input arguments."""
    root = tmp_path / "images"
    root.mkdir()
    data = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), 90, np.uint8)).save(data, format="JPEG")
    for i in range(n):
        if i == at:
            os.mkfifo(root / f"{i:04d}.jpg")
        else:
            (root / f"{i:04d}.jpg").write_bytes(data.getvalue())
    (tmp_path / "train.txt").write_text("".join(f"{i:04d}.jpg {i % 2}\n" for i in range(n)))
    (tmp_path / "synsets.txt").write_text(f"{WNIDS[0]}\n{WNIDS[1]}\n")
    (tmp_path / "families.txt").write_text(f"{WNIDS[0]} natural\n{WNIDS[1]} man-made\n")
    return ["--train", str(tmp_path / "train.txt"), "--train-root", str(root), "--synsets",
            str(tmp_path / "synsets.txt"), "--families", str(tmp_path / "families.txt"), "--out", str(tmp_path / "out"),
            "--resize", "8", "8", "--splits", "0", "--reduced", ""]


def _open_when_read(fifo: Path, timeout: float = 120.0) -> int:
    """Open the writing end of `fifo` once a reader has opened it (a worker is waiting there)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_stop_prepare_in_seconds_in_one_line_keeping_the_chunks_done(tmp_path, name) -> None:
    args = _list_with_a_fifo(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "replicate", "data", "prepare", *args, "--workers", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    fifo = tmp_path / "images" / "0100.jpg"
    writer = _open_when_read(fifo)  # a worker waits in chunk 1 (images 64..127); chunk 0 is done meanwhile
    time.sleep(1.0)
    sent = time.monotonic()
    os.killpg(run.pid, getattr(signal, name))  # as a terminal's Ctrl-C or SLURM's scancel: every process
    _, err = run.communicate(timeout=60)
    seconds = time.monotonic() - sent
    os.close(writer)
    partial = tmp_path / "out" / "store.partial"
    assert run.returncode == 2 and seconds < 10, (run.returncode, seconds, err)
    assert "Traceback" not in err and [line for line in err.splitlines() if "error" in line.lower()] == [
        f"error: {name}: stopped after 64 of 200 images; they are kept in {partial}: run the same command again "
        "to resume"], err
    assert (partial / "index.part").stat().st_size == 64 * store_module.INDEX_DTYPE.itemsize
    fifo.unlink()
    fifo.write_bytes((tmp_path / "images" / "0000.jpg").read_bytes())
    assert main(["data", "prepare", *args, "--workers", "1"]) == 0
    assert json.loads((tmp_path / "out" / "store" / "store.json").read_text())["records"] == 200


def test_a_build_stopped_as_it_finishes_leaves_a_complete_store(ilsvrc, tmp_path, monkeypatch) -> None:
    """The store is renamed complete before the build's own files are removed: a stop between the
    two leaves a store that opens (the next build of it removes them), never a finished build
    under `.partial` that a rerun refuses."""
    train = train_images(ilsvrc.train_tar, WNIDS)
    build = lambda out: build_store(out, [("train", train)], StoreOptions("raw", (8, 8)),  # noqa: E731
                                    show_progress=False, expected=Expected.listed([("train", train.labels)], WNIDS),
                                    accept={CLASS0})
    build(tmp_path / "whole")
    drop = store_module._drop_build_files

    def stopped(folder: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "_drop_build_files", stopped)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "store")
    out = tmp_path / "store"
    assert not (tmp_path / "store.partial").exists() and (out / "store.json").is_file()
    assert (out / "index.part").is_file()
    monkeypatch.setattr(store_module, "_drop_build_files", drop)
    assert build(out).written == build(tmp_path / "whole").written  # found done: nothing decoded again
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    for name in ("data.bin", "index.npy", "names.txt", "failed.txt"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
