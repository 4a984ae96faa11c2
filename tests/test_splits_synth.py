"""The generated dataset: layout, determinism, families, and `data splits` on it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from replicate.cli import main
from replicate.data.families import MAN_MADE, NATURAL, read_families
from replicate.data.splits import read_synsets
from replicate.data.synth import (KINDS, PATTERNS, SynthConfig, catalogue, generate, image_rng,
                                  orientation, render)
from replicate.errors import ReplicateError

SMALL = SynthConfig(classes=6, train_per_class=3, val_per_class=2, size=20, seed=5)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    assert generate(out, SMALL)
    return out


def test_layout_is_ilsvrc2012s(small: Path) -> None:
    wnids = read_synsets(small / "synsets.txt")
    assert wnids == [f"s{c:07d}" for c in range(6)]
    train = [line.split() for line in (small / "train.txt").read_text().splitlines()]
    assert train[:2] == [["s0000000/s0000000_00000.JPEG", "0"], ["s0000000/s0000000_00001.JPEG", "0"]]
    assert [int(c) for _, c in train] == [c for c in range(6) for _ in range(3)]
    val = [line.split() for line in (small / "val.txt").read_text().splitlines()]
    assert [p for p, _ in val] == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 13)]
    assert Counter(int(c) for _, c in val) == {c: 2 for c in range(6)}
    assert [int(c) for _, c in val] != sorted(int(c) for _, c in val)  # classes interleave
    files = {str(p.relative_to(small)) for p in small.rglob("*.JPEG")}
    assert files == {f"train/{p}" for p, _ in train} | {f"val/{p}" for p, _ in val}
    for path in (small / "train" / train[0][0], small / "val" / val[0][0]):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (20, 20))
    assert read_families(small / "families.txt") == {
        w: NATURAL if c % 2 == 0 else MAN_MADE for c, w in enumerate(wnids)}
    assert json.loads((small / "synth.json").read_text()) == {
        "classes": 6, "train_per_class": 3, "val_per_class": 2, "size": 20, "seed": 5}


def test_same_seed_same_bytes_other_seed_other_images(small: Path, tmp_path: Path) -> None:
    assert generate(tmp_path / "again", SMALL)
    assert tree(tmp_path / "again") == tree(small)
    other = SynthConfig(**{**SMALL.__dict__, "seed": 6})
    assert generate(tmp_path / "other", other)
    assert (tmp_path / "other" / "val.txt").read_bytes() != (small / "val.txt").read_bytes()
    name = "train/s0000000/s0000000_00000.JPEG"
    assert (tmp_path / "other" / name).read_bytes() != (small / name).read_bytes()


def test_an_image_does_not_depend_on_how_many_are_generated(small: Path, tmp_path: Path) -> None:
    more = SynthConfig(**{**SMALL.__dict__, "train_per_class": 4})
    assert generate(tmp_path / "more", more)
    name = "train/s0000005/s0000005_00002.JPEG"
    assert (tmp_path / "more" / name).read_bytes() == (small / name).read_bytes()


def test_rerun_is_a_no_op_and_another_folder_is_refused(small: Path, tmp_path: Path) -> None:
    before = tree(small)
    assert generate(small, SMALL) is False
    assert tree(small) == before
    with pytest.raises(ReplicateError, match="exists and is not this generated dataset"):
        generate(small, SynthConfig(**{**SMALL.__dict__, "seed": 1}))
    (tmp_path / "mine").mkdir()
    with pytest.raises(ReplicateError, match="mine: exists"):
        generate(tmp_path / "mine", SMALL)


@pytest.mark.parametrize("field, value", [("classes", 1), ("classes", 61), ("size", 8), ("train_per_class", 0),
                                          ("train_per_class", 100000), ("seed", -1)])
def test_bad_parameters_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                      field: str, value: int) -> None:
    args = {"classes": 6, "train_per_class": 3, "val_per_class": 2, "size": 20, "seed": 0, field: value}
    argv = ["data", "synth", "--out", str(tmp_path / "d")]
    for name, number in args.items():
        argv += [f"--{name.replace('_', '-')}", str(number)]
    assert main(argv) == 2
    assert f"{field} must lie in" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_catalogue_balances_families_kinds_and_variants() -> None:
    classes = catalogue(40)
    assert Counter(c.family for c in classes) == {NATURAL: 20, MAN_MADE: 20}
    for family, kinds in KINDS.items():
        per_kind = Counter(c.kind for c in classes if c.family == family)
        assert per_kind == {kind: 4 for kind in kinds}
    assert {(c.kind, c.variant) for c in classes} == {
        (k, v) for kinds in KINDS.values() for k in kinds for v in range(4)}
    assert all(c.variants == 4 for c in classes)
    odd = catalogue(7)
    assert [c.family for c in odd].count(NATURAL) == 4
    assert [(c.kind, c.variant, c.variants) for c in odd if c.family == NATURAL] == [
        ("fibres", 0, 1), ("blobs", 0, 1), ("spots", 0, 1), ("cells", 0, 1)]


def test_every_kind_draws_a_pattern_of_both_colours() -> None:
    assert set(PATTERNS) == {k for kinds in KINDS.values() for k in kinds}
    for label, c in enumerate(catalogue(40)):
        image = render(c, 36, image_rng(0, label, 0, 0)).astype(float)
        assert image.shape == (36, 36, 3)
        luminance = image @ np.array([0.299, 0.587, 0.114])  # what _colours keeps apart
        spread = np.percentile(luminance, 95) - np.percentile(luminance, 5)
        assert spread > 40, (c.kind, c.variant, spread)  # not a flat colour plus noise


def test_data_splits_runs_on_the_generated_dataset(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "sets"
    assert main(["data", "splits", "--train-list", str(small / "train.txt"),
                 "--val-list", str(small / "val.txt"), "--synsets", str(small / "synsets.txt"),
                 "--families", str(small / "families.txt"), "--reduced", "1,2", "--out", str(out)]) == 0
    natural = (out / "halfnatmanA_valid" / "idxmap.txt").read_text()
    assert natural == "0 0 s0000000\n2 1 s0000002\n4 2 s0000004\n"
    np.random.seed([0])
    a = sorted(np.random.choice(np.arange(6), 3, replace=False).tolist())
    assert [int(line.split()[0]) for line in (out / "half0A_train" / "idxmap.txt").read_text().splitlines()] == a
    assert len((out / "reduced0001_train" / "files.txt").read_text().splitlines()) == 6


def test_oriented_classes_survive_the_data_layers_mirror() -> None:
    """A horizontal mirror turns angle a into pi - a: each oriented class must stay itself, so
    the class is its folded angle min(a, pi - a), apart from its neighbours', and an image is
    as likely to show a as pi - a."""
    def folded(a: float) -> float:
        return min(a % np.pi, np.pi - a % np.pi)

    oriented = [c for c in catalogue(40) if c.kind in ("fibres", "stripes")]
    centres = {}
    for c in oriented:
        rng = np.random.RandomState([1, c.variant])
        angles = [orientation(c, rng) for _ in range(200)]
        assert 20 < sum(a > np.pi / 2 for a in angles) < 180  # both sides drawn
        centres[(c.kind, c.variant)] = np.median([folded(a) for a in angles])
    for kind in ("fibres", "stripes"):
        ordered = [centres[(kind, v)] for v in range(4)]
        assert np.all(np.diff(ordered) > np.pi / 8), (kind, ordered)  # 30 degrees apart
