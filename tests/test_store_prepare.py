"""`data prepare` from ILSVRC2012's own files (a miniature built like them: tests/ilsvrc_support.py):
one store, a view per set, means; the same store from the tars, their folders or Caffe's lists."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from ilsvrc_support import ALL_WNIDS, WNIDS, extract, make_ilsvrc, meta_mat

from replicate.cli import main
from replicate.data import store as store_module
from replicate.data.complete import Expected
from replicate.data.devkit import Devkit, devkit_ids
from replicate.data.ilsvrc import train_images
from replicate.data.image import encode_jpeg
from replicate.data.lmdb_io import LmdbReader, LmdbWriter
from replicate.data.prepare import _write_means
from replicate.data.store import Store, StoreOptions, build_store
from replicate.data.view import View
from replicate.errors import ReplicateError
from replicate.io.prototxt import parse_text
from replicate.layers.base import layer_class
from replicate.proto import caffe_pb2

SIZE = ["--resize", "8", "8", "--workers", "1"]


def options(ilsvrc) -> list[str]:
    """The miniature's classes, tiny images, and its truncated image's class accepted short."""
    return ["--synsets", str(ilsvrc.synsets), "--accept-gap", WNIDS[0], *SIZE]


@pytest.fixture(scope="module")
def ilsvrc(tmp_path_factory: pytest.TempPathFactory):
    return make_ilsvrc(tmp_path_factory.mktemp("ilsvrc"))


@pytest.fixture(scope="module")
def prepared(ilsvrc, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("prepared") / "data"
    capture = io.StringIO()
    with contextlib.redirect_stderr(capture), contextlib.redirect_stdout(capture):
        code = main(["data", "prepare", "--train", str(ilsvrc.train_tar), "--val", str(ilsvrc.val_tar),
                     "--devkit", str(ilsvrc.devkit), "--out", str(out), *options(ilsvrc)])
    assert code == 0, capture.getvalue()
    return out, capture.getvalue()


def test_lists_are_caffes_with_validation_labels_from_the_devkit(prepared, ilsvrc) -> None:
    out, _ = prepared
    assert (out / "whole_train" / "files.txt").read_text() == "".join(f"{n} {l}\n" for n, l in ilsvrc.train)
    assert (out / "whole_valid" / "files.txt").read_text() == "".join(f"{n} {l}\n" for n, l in sorted(ilsvrc.val))
    sets = sorted(p.name for p in out.iterdir() if (p / "view.json").is_file())
    assert len(sets) == 2 * 11 + 11  # whole, 8 random halves, 2 natman halves (train, valid); 11 reduced


def test_bad_image_is_counted_and_reported_and_the_odd_ones_go_through(prepared) -> None:
    out, output = prepared
    meta = json.loads((out / "store" / "store.json").read_text())
    assert (meta["records"], meta["failed"]) == (83, 1)
    assert "failed train/n01440764/n01440764_truncated.JPEG: cannot decode image" in output
    assert "1 failed" in output
    store = Store(out / "store")
    records = store.records_of("train")
    gray = store.raw(records["n01440764/n01440764_gray.JPEG"])
    assert gray.shape == (3, 8, 8) and (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()
    for odd in ("cmyk", "png"):
        assert store.raw(records[f"n01440764/n01440764_{odd}.JPEG"]).shape == (3, 8, 8)
    view = View(out / "whole_train")
    assert view.meta["skipped"] == 1 and len(view) == 43
    store.close()
    view.close()


def test_views_hold_their_lists_images_and_labels_in_a_recorded_shuffle(prepared) -> None:
    out, _ = prepared
    store = Store(out / "store")
    for name in ("half0A_train", "halfnatmanB_valid", "reduced0002_train"):
        view = View(out / name)
        listed = dict(line.rsplit(" ", 1) for line in (out / name / "files.txt").read_text().splitlines())
        part = view.meta["part"]
        got = {store.name(int(r)).split("/", 1)[1]: int(l) for r, l in zip(view.records, view.labels)}
        listed.pop("n01440764/n01440764_truncated.JPEG", None)
        assert got == {k: int(v) for k, v in listed.items()}
        assert all(store.name(int(r)).startswith(f"{part}/") for r in view.records)
        assert list(got) != list(listed)  # shuffled, by the seed the view records
        view.close()
    store.close()


def _data_layer(source: Path, mean: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    text = (f'name: "data" type: "Data" top: "data" top: "label" transform_param {{ crop_size: 6 mirror: true '
            f'mean_file: "{mean}" }} data_param {{ source: "{source}" batch_size: 7 backend: LMDB }}')
    param = parse_text(text, caffe_pb2.LayerParameter())
    layer = layer_class(param)(param, caffe_pb2.TRAIN, [])
    layer.configure(seed=5)
    batches = [layer.forward() for _ in range(4)]
    layer.close()
    return batches


def test_a_view_reads_like_its_exported_caffe_lmdb_and_its_mean_is_caffes(prepared, tmp_path: Path) -> None:
    out, _ = prepared
    view, mean = out / "half1B_train", out / "half1B_train" / "mean.binaryproto"
    assert main(["data", "export-lmdb", str(view), str(tmp_path / "lmdb")]) == 0
    for (a, la), (b, lb) in zip(_data_layer(view, mean), _data_layer(tmp_path / "lmdb", mean)):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert main(["data", "mean", str(tmp_path / "lmdb"), "--out", str(tmp_path / "mean.binaryproto")]) == 0
    assert (tmp_path / "mean.binaryproto").read_bytes() == mean.read_bytes()


def test_exported_keys_are_convert_imagesets_for_the_list_in_the_views_order(prepared, tmp_path: Path) -> None:
    out, _ = prepared
    assert main(["data", "export-lmdb", str(out / "half0A_valid"), str(tmp_path / "lmdb")]) == 0
    view, reader = View(out / "half0A_valid"), LmdbReader(tmp_path / "lmdb")
    listed = {line.rsplit(" ", 1)[0] for line in (out / "half0A_valid" / "files.txt").read_text().splitlines()}
    names = [view.store.name(int(r)).removeprefix("val/") for r in view.records]
    assert [reader.key(i).decode() for i in range(len(reader))] == [f"{i:08d}_{n}" for i, n in enumerate(names)]
    assert set(names) <= listed  # `%08d_<list name>`: ILSVRC2012_val_00000007.JPEG, no "val/" before it
    view.close()
    reader.close()


def test_a_stopped_export_resumes_to_the_same_lmdb_and_shows_progress(prepared, tmp_path: Path, monkeypatch,
                                                                      capsys) -> None:
    out, _ = prepared
    view = str(out / "whole_train")
    assert main(["data", "export-lmdb", view, str(tmp_path / "whole")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"exporting {view} to {tmp_path / 'whole'}: 0/43 (0%,") and lines[0].endswith("ETA ?)")
    assert lines[-1].startswith(f"exporting {view} to {tmp_path / 'whole'}: 43/43 (100%,") and "ETA 00:00:00" in lines[-1]
    put, puts = LmdbWriter.put, []

    def stop_at_the_21st(self, key, datum):
        puts.append(key)
        if len(puts) == 21:
            raise KeyboardInterrupt
        put(self, key, datum)

    monkeypatch.setattr(LmdbWriter, "put", stop_at_the_21st)
    assert main(["data", "export-lmdb", view, str(tmp_path / "lmdb")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: SIGINT: stopped after 20 of 43 records, kept in {tmp_path / 'lmdb.partial'}: run the same command "
        "again to resume")
    puts.clear()
    monkeypatch.setattr(LmdbWriter, "put", lambda self, key, datum: (puts.append(key), put(self, key, datum)))
    assert main(["data", "export-lmdb", view, str(tmp_path / "lmdb")]) == 0
    assert len(puts) == 23 and not (tmp_path / "lmdb.partial").exists()
    whole, resumed = LmdbReader(tmp_path / "whole"), LmdbReader(tmp_path / "lmdb")
    assert [(whole.key(i), whole.datum(i)) for i in range(43)] == [(resumed.key(i), resumed.datum(i)) for i in range(43)]
    assert sorted(p.name for p in (tmp_path / "lmdb").iterdir()) == ["data.mdb", "lock.mdb"]
    whole.close()
    resumed.close()


def test_an_export_stopped_after_the_earlier_lmdb_was_removed_is_only_renamed_by_the_rerun(
        prepared, tmp_path: Path, monkeypatch, capsys) -> None:
    out, _ = prepared
    view, lmdb_out = str(out / "half0A_valid"), str(tmp_path / "lmdb")
    assert main(["data", "export-lmdb", str(out / "half0B_valid"), lmdb_out]) == 0
    replace = os.replace

    def stop(*args) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", stop)
    assert main(["data", "export-lmdb", view, lmdb_out]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: SIGINT: stopped after 20 of 20 records")
    assert not (tmp_path / "lmdb").exists()  # the earlier one is gone, the new one complete in lmdb.partial
    monkeypatch.setattr(os, "replace", replace)
    put, puts = LmdbWriter.put, []
    monkeypatch.setattr(LmdbWriter, "put", lambda self, key, datum: (puts.append(key), put(self, key, datum)))
    assert main(["data", "export-lmdb", view, lmdb_out]) == 0
    assert puts == [] and not (tmp_path / "lmdb.partial").exists()
    assert sorted(p.name for p in (tmp_path / "lmdb").iterdir()) == ["data.mdb", "lock.mdb"]
    assert len(LmdbReader(tmp_path / "lmdb")) == 20


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_export_refuses_an_out_that_is_no_lmdb_folder_or_is_holds_or_lies_in_what_it_reads(
        prepared, tmp_path: Path, capsys) -> None:
    # `export-lmdb x/y/z/half0B_train x/y/z` replaced the whole `data prepare` folder (store, views,
    # means) with the LMDB; OUT the view itself destroyed the view it read, any other folder was lost.
    out, _ = prepared
    root = tmp_path / "x" / "y" / "z"
    shutil.copytree(out, root)
    (tmp_path / "victim" / "sub").mkdir(parents=True)
    (tmp_path / "victim" / "thesis.tex").write_text("years of work")
    view = root / "half0B_train"
    before = _tree(tmp_path)
    for target, error in [
        (root, f"holds the view being read ({view}); give another output"),
        (view, f"is the view being read ({view}); give another output"),
        (view / "lmdb", f"is inside the view being read ({view}); give another output"),
        (root / "store" / "lmdb", f"is inside the store being read ({root / 'store'}); give another output"),
        (tmp_path / "victim", "holds sub/, thesis.tex, not only an LMDB's data.mdb and lock.mdb; nothing was "
                              "written: remove it or give another output"),
    ]:
        assert main(["data", "export-lmdb", str(view), str(target)]) == 2
        assert capsys.readouterr().err == f"error: {target}: {error}\n"
    assert _tree(tmp_path) == before


def test_the_means_progress_counts_images_and_announces_what_they_read(prepared) -> None:
    out, output = prepared
    images = sum(json.loads((p / "view.json").read_text())["records"] for p in out.iterdir() if p.name.endswith("_train"))
    assert f"means of 22 training sets: {images:,} images to read, ~" in output
    assert f"means of 22 training sets: {images:,}/{images:,} (100%" in output


def test_means_computed_by_workers_are_the_same_means(prepared, tmp_path: Path, capsys) -> None:
    out, _ = prepared
    (tmp_path / "store").symlink_to(out / "store")
    names = ("whole_train", "halfnatmanA_train", "halfnatmanB_train")
    for name in names:
        shutil.copytree(out / name, tmp_path / name, ignore=shutil.ignore_patterns("mean.binaryproto"))
    written: list[str] = []
    sizes = [json.loads((tmp_path / name / "view.json").read_text())["records"] for name in names]
    _write_means(list(zip([tmp_path / name for name in names], sizes)), 2, True, written)
    assert sorted(written) == sorted(names)
    assert "means of 3 training sets: 86/86 (100%" in capsys.readouterr().err  # 43 + the two halves of 43
    for name in names:
        assert (tmp_path / name / "mean.binaryproto").read_bytes() == (out / name / "mean.binaryproto").read_bytes()


def _data_bytes(out: Path) -> bytes:
    return (out / "store" / "data.bin").read_bytes()


def test_extracted_folders_and_caffe_lists_give_the_same_store(prepared, ilsvrc, tmp_path: Path) -> None:
    out, _ = prepared
    classes = tmp_path / "train_tars"
    extract(ilsvrc.train_tar, classes)  # tar xf ILSVRC2012_img_train.tar: a folder of class tars
    val, devkit = tmp_path / "val", tmp_path / "devkit"
    extract(ilsvrc.val_tar, val)
    extract(ilsvrc.devkit, devkit)
    folders = tmp_path / "folders"
    assert main(["data", "prepare", "--train", str(classes), "--val", str(val), "--devkit",
                 str(devkit / "ILSVRC2012_devkit_t12"), "--out", str(folders), "--splits", "0", "--reduced", "",
                 *options(ilsvrc)]) == 0
    assert _data_bytes(folders) == _data_bytes(out)
    images = tmp_path / "images"
    for wnid in WNIDS:
        extract(classes / f"{wnid}.tar", images / wnid)
    (tmp_path / "train.txt").write_text((out / "whole_train" / "files.txt").read_text())
    (tmp_path / "val.txt").write_text((out / "whole_valid" / "files.txt").read_text())
    lists = tmp_path / "lists"
    assert main(["data", "prepare", "--train", str(tmp_path / "train.txt"), "--train-root", str(images),
                 "--val", str(tmp_path / "val.txt"), "--val-root", str(val), "--out", str(lists),
                 "--splits", "0", "--reduced", "", *options(ilsvrc)]) == 0
    assert _data_bytes(lists) == _data_bytes(out)


def test_another_seed_on_a_prepared_root_is_refused_before_anything_is_rewritten(prepared, ilsvrc, tmp_path: Path,
                                                                                   capsys) -> None:
    """--seed orders every view: a rerun with another one would reorder the views under the nets
    that train or resume on them."""
    out = tmp_path / "data"
    shutil.copytree(prepared[0], out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    argv = ["data", "prepare", "--train", str(ilsvrc.train_tar), "--val", str(ilsvrc.val_tar),
            "--devkit", str(ilsvrc.devkit), "--out", str(out), *options(ilsvrc)]
    assert main([*argv, "--seed", "7"]) == 2
    assert capsys.readouterr().err.endswith(
        f"\nerror: {out}: its views (half0A_train, half0A_valid, half0B_train and 30 more) were shuffled with --seed 0; "
        "--seed 7 would reorder them under the nets that train or resume on them: give --seed 0, or another --out\n")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert main([*argv, "--seed", "0"]) == 0  # the same seed: nothing to rewrite
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_rerun_that_reads_other_files_is_refused_saying_so(prepared, ilsvrc, tmp_path: Path, capsys) -> None:
    """A wrong --train-root makes every image a failure the partial build keeps; the rerun with the
    right root must not resume on those failures but say what differs, as the first error says
    what to do."""
    out, _ = prepared
    classes, images, val = tmp_path / "train_tars", tmp_path / "images", tmp_path / "val"
    extract(ilsvrc.train_tar, classes)
    extract(ilsvrc.val_tar, val)
    for wnid in WNIDS:
        extract(classes / f"{wnid}.tar", images / wnid)
    (tmp_path / "train.txt").write_text((out / "whole_train" / "files.txt").read_text())
    (tmp_path / "val.txt").write_text((out / "whole_valid" / "files.txt").read_text())
    lists = tmp_path / "lists"

    def prepare(root: Path) -> int:
        return main(["data", "prepare", "--train", str(tmp_path / "train.txt"), "--train-root", str(root),
                     "--val", str(tmp_path / "val.txt"), "--val-root", str(val), "--out", str(lists),
                     "--splits", "0", "--reduced", "", *options(ilsvrc)])

    assert prepare(val) == 2
    first = capsys.readouterr().err
    partial = lists / "store.partial"
    assert (f"images could not be read at all (e.g. train/{WNIDS[0]}/" in first
            and f"if their paths are wrong (--train-root, --val-root), remove {partial} and run again" in first)
    assert prepare(images) == 2
    assert (f"\nerror: {partial}: an unfinished build that read the same images from other files (it read {val}/"
            in capsys.readouterr().err)
    assert partial.is_dir()
    shutil.rmtree(partial)
    assert prepare(images) == 0
    assert _data_bytes(lists) == _data_bytes(out)


def test_missing_class_tar_or_input_is_a_one_line_error(ilsvrc, tmp_path: Path, capsys) -> None:
    classes = tmp_path / "train_tars"
    extract(ilsvrc.train_tar, classes)
    (classes / f"{WNIDS[3]}.tar").unlink()
    synsets = ["--synsets", str(ilsvrc.synsets), "--devkit", str(ilsvrc.devkit), "--out", str(tmp_path / "o")]
    assert main(["data", "prepare", "--train", str(classes), *synsets]) == 2
    assert capsys.readouterr().err == f"error: {classes}: no {WNIDS[3]}.tar for class 3 ({WNIDS[3]})\n"
    assert main(["data", "prepare", "--train", str(tmp_path / "ILSVRC2012_img_train.tar"), *synsets]) == 2
    assert "training images not found" in capsys.readouterr().err
    assert main(["data", "prepare", "--val", str(ilsvrc.val_tar), *synsets[:2], *synsets[4:]]) == 2
    assert "validation images need --devkit" in capsys.readouterr().err
    assert main(["data", "prepare", "--train", str(classes), *synsets[:2], *synsets[4:]]) == 2
    assert "ILSVRC2012's files need --devkit, whose num_train_images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_devkit_meta_with_1860_synsets_maps_ids_to_sorted_wnid_labels(ilsvrc) -> None:
    synsets = scipy.io.loadmat(io.BytesIO(meta_mat(ilsvrc.ids)), squeeze_me=True)["synsets"]
    assert len(synsets) == 1860 and int(np.sum(synsets["num_children"] > 0)) == 860
    mapping = devkit_ids(Devkit(meta_mat(ilsvrc.ids), "meta.mat", b"", "gt"), ALL_WNIDS)
    assert mapping == {ilsvrc.ids[label]: label for label in range(1000)}
    assert mapping != {i + 1: i for i in range(1000)}  # the devkit's order is not Caffe's


def build(out: Path, train, options: StoreOptions, **kwargs) -> store_module.BuildReport:
    """build_store of the miniature's training images, its truncated image's class accepted short."""
    return build_store(out, [("train", train)], options, show_progress=False,
                       expected=Expected.listed([("train", train.labels)], WNIDS), accept={WNIDS[0]}, **kwargs)


def test_an_interrupted_build_resumes_to_the_same_store(ilsvrc, tmp_path: Path, monkeypatch) -> None:
    train = train_images(ilsvrc.train_tar, WNIDS)
    options = StoreOptions("raw", (8, 8))
    build(tmp_path / "whole", train, options)
    encode, calls = store_module.encode_chunk, []

    def stop_at_the_fifth(job):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return encode(job)

    monkeypatch.setattr(store_module, "CHUNK", 4)
    monkeypatch.setattr(store_module, "FLUSH_EVERY", 8)
    monkeypatch.setattr(store_module, "encode_chunk", stop_at_the_fifth)
    with pytest.raises(ReplicateError, match=r"SIGINT: stopped after 16 of 44 images; they are kept in .*resumed.partial: run the same command again"):
        build(tmp_path / "resumed", train, options)
    partial = tmp_path / "resumed.partial"
    with open(partial / "data.bin", "ab") as f:
        f.write(b"half a record")  # as if killed in the middle of a write
    with pytest.raises(ReplicateError, match="not a finished store .*resumed.partial is unfinished"):
        Store(tmp_path / "resumed")
    monkeypatch.setattr(store_module, "encode_chunk", encode)
    report = build(tmp_path / "resumed", train, options)
    assert report.resumed_at == 16 and len(report.failed) == 1
    assert (tmp_path / "resumed" / "data.bin").read_bytes() == (tmp_path / "whole" / "data.bin").read_bytes()
    assert (tmp_path / "resumed" / "index.npy").read_bytes() == (tmp_path / "whole" / "index.npy").read_bytes()
    with pytest.raises(ReplicateError, match="other images or options"):
        build(tmp_path / "resumed", train, StoreOptions("jpeg", (8, 8)))


def test_parallel_build_equals_one_process(ilsvrc, prepared, tmp_path: Path) -> None:
    out, _ = prepared
    train = train_images(ilsvrc.train_tar, WNIDS)
    build(tmp_path / "store", train, StoreOptions("raw", (8, 8)), workers=2)
    whole = Store(out / "store")
    train_bytes = sum(int(r["length"]) for r in whole.index if r["part"] == 0)
    assert (tmp_path / "store" / "data.bin").read_bytes() == _data_bytes(out)[:train_bytes]
    whole.close()


def test_jpeg_store_holds_the_raw_stores_pixels_encoded_at_its_quality(prepared, ilsvrc, tmp_path: Path) -> None:
    out, _ = prepared
    train = train_images(ilsvrc.train_tar, WNIDS)
    build(tmp_path / "jpeg", train, StoreOptions("jpeg", (8, 8), quality=70))
    raw, jpeg = Store(out / "store"), Store(tmp_path / "jpeg")
    assert jpeg.meta["quality"] == 70 and len(jpeg) == len(train) - 1
    for record in range(len(jpeg)):
        assert jpeg.name(record) == raw.name(record) and jpeg.shape(record) == raw.shape(record)
        assert bytes(jpeg.encoded(record)) == encode_jpeg(raw.raw(record).transpose(1, 2, 0), 70)
    raw.close()
    jpeg.close()
