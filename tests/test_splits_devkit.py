"""Caffe lists rebuilt from ILSVRC2012's folders and devkit (on a generated dataset in that layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from replicate.cli import main
from replicate.data.devkit import val_entries
from replicate.data.synth import SynthConfig, generate
from replicate.errors import ReplicateError


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated dataset plus a devkit whose ILSVRC2012_IDs run in another order than the
    sorted wnids (as the real devkit's do), with one non-leaf synset that has no images."""
    root = tmp_path_factory.mktemp("imagenet")
    generate(root / "data", SynthConfig(classes=5, train_per_class=3, val_per_class=2, size=16))
    wnids = (root / "data" / "synsets.txt").read_text().split()
    id_order = [3, 0, 4, 1, 2]  # ILSVRC2012_ID k + 1 is class id_order[k]
    records = np.zeros((6, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for k, label in enumerate(id_order):
        records[k, 0] = (k + 1, wnids[label], 0)
    records[5, 0] = (6, "n00001740", 5)
    (root / "devkit" / "data").mkdir(parents=True)
    scipy.io.savemat(str(root / "devkit" / "data" / "meta.mat"), {"synsets": records})
    labels = [int(line.split()[1]) for line in (root / "data" / "val.txt").read_text().splitlines()]
    truth = "".join(f"{id_order.index(label) + 1}\n" for label in labels)
    (root / "devkit" / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text(truth)
    return root


def run_splits(root: Path, out: Path, *extra: str) -> int:
    data = root / "data"
    return main(["data", "splits", "--synsets", str(data / "synsets.txt"),
                 "--families", str(data / "families.txt"), "--reduced", "1", "--out", str(out), *extra])


def test_folders_and_devkit_give_caffes_lists(imagenet: Path, tmp_path: Path) -> None:
    data = imagenet / "data"
    assert run_splits(imagenet, tmp_path, "--train-dir", str(data / "train"),
                      "--val-dir", str(data / "val"), "--devkit", str(imagenet / "devkit")) == 0
    assert (tmp_path / "whole_train" / "files.txt").read_bytes() == (data / "train.txt").read_bytes()
    assert (tmp_path / "whole_valid" / "files.txt").read_bytes() == (data / "val.txt").read_bytes()


def test_missing_or_foreign_folders_are_refused(imagenet: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    train = tmp_path / "train"
    train.mkdir()
    assert run_splits(imagenet, tmp_path / "o", "--train-dir", str(train)) == 2
    assert "no folder for class 0 (s0000000)" in capsys.readouterr().err
    (train / "n99999999").mkdir()
    assert run_splits(imagenet, tmp_path / "o", "--train-dir", str(train)) == 2
    assert "folder n99999999 is not one of the 5 classes" in capsys.readouterr().err
    assert run_splits(imagenet, tmp_path / "o", "--val-dir", str(imagenet / "data" / "val")) == 2
    assert "--val-dir needs --devkit" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_validation_images_must_match_the_ground_truth(imagenet: Path, tmp_path: Path) -> None:
    wnids = (imagenet / "data" / "synsets.txt").read_text().split()
    val = tmp_path / "val"
    val.mkdir()
    for n in range(1, 11):
        (val / f"ILSVRC2012_val_{n:08d}.JPEG").write_bytes(b"")
    assert len(val_entries(val, imagenet / "devkit", wnids)) == 10
    (val / "ILSVRC2012_val_00000011.JPEG").write_bytes(b"")
    with pytest.raises(ReplicateError, match="11 images but .* labels 10"):
        val_entries(val, imagenet / "devkit", wnids)
    (val / "ILSVRC2012_val_00000010.JPEG").unlink()
    with pytest.raises(ReplicateError, match=r"ILSVRC2012_val_00000011.JPEG: not an ILSVRC2012_val_<1..10>"):
        val_entries(val, imagenet / "devkit", wnids)
    with pytest.raises(ReplicateError, match="no ILSVRC2012_ID for class s0000005"):
        val_entries(val, imagenet / "devkit", wnids + ["s0000005"])
