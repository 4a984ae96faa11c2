"""The paper's datasets: byte-identical validation lists, relabelling, reduced sets, bad input."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from replicate.cli import main
from replicate.data.families import ILSVRC12_WNIDS
from replicate.data.splits import (
    read_synsets,
    ImageList,
    first_per_class,
    natman_classes,
    paper_subsets,
    check_labels,
    random_half,
    select,
)
from replicate.errors import ReplicateError

WHOLE_VALID = Path(__file__).parent / "data" / "whole_valid_files.txt"

# The authors' published md5s of their validation lists (shared/paper/README.md).
PUBLISHED_VALID_MD5 = {
    "half0A": "2f10009e20d77eb7007cf70674958b94", "half0B": "cce39b383d681345c873faf2c0c28d33",
    "half1A": "9ab48b6420504e32ff4498e7d8569f8b", "half1B": "57522f5e2aa69547846089f5197c8a6b",
    "half2A": "03d05b6565ab9176baccdd05d746bfd1", "half2B": "18de8b37378e07e60dc602b6130eeeb2",
    "half3A": "46086440ddde128f169f23331998499d", "half3B": "e5f9f0895fd0d49a8ac0b804ec891282",
    "halfnatmanA": "4fb63c72229ba07106a558127192cb9f",
    "halfnatmanB": "f03be5732fb6bc7928ee53397b043613",
    "whole": "b6284a7c08fba47457c2c1f6049a156e",
}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def lines_of(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


def test_validation_lists_match_the_authors_md5s(tmp_path: Path) -> None:
    assert md5(WHOLE_VALID) == PUBLISHED_VALID_MD5["whole"]
    assert main(["data", "splits", "--val-list", str(WHOLE_VALID), "--out", str(tmp_path)]) == 0
    for name, digest in PUBLISHED_VALID_MD5.items():
        assert md5(tmp_path / f"{name}_valid" / "files.txt") == digest, name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}_valid" for n in PUBLISHED_VALID_MD5)


def test_idxmap_relabels_in_increasing_original_order(tmp_path: Path) -> None:
    assert main(["data", "splits", "--val-list", str(WHOLE_VALID), "--out", str(tmp_path)]) == 0
    wnids = read_synsets(ILSVRC12_WNIDS)
    natural = set()
    for half in ("A", "B"):
        rows = lines_of(tmp_path / f"halfnatman{half}_valid" / "idxmap.txt")
        original = [int(r[0]) for r in rows]
        assert [int(r[1]) for r in rows] == list(range(len(rows)))
        assert original == sorted(original)
        assert [r[2] for r in rows] == [wnids[o] for o in original]
        if half == "A":
            natural = set(original)
        else:
            assert len(natural) == 449 and len(rows) == 551 and natural.isdisjoint(original)
        # every image of the set carries the new label of its original class
        new = {o: n for n, o in enumerate(original)}
        full = lines_of(WHOLE_VALID)
        kept = [(f, str(new[int(c)])) for f, c in full if int(c) in new]
        assert [tuple(r) for r in lines_of(tmp_path / f"halfnatman{half}_valid" / "files.txt")] == kept


def test_random_halves_are_the_legacy_numpy_draw_for_any_class_count() -> None:
    for classes in (1000, 40, 7):
        for seed in range(4):
            np.random.seed([seed])  # the authors' global-state call
            expected = np.sort(np.random.choice(np.arange(classes), classes // 2, replace=False))
            assert np.array_equal(random_half(classes, seed), expected)
    subsets = {s.name: s.classes for s in paper_subsets(40, np.arange(0, 40, 2), splits=2)}
    assert list(subsets) == ["whole", "half0A", "half0B", "half1A", "half1B", "halfnatmanA",
                             "halfnatmanB"]
    for a, b in (("half0A", "half0B"), ("half1A", "half1B"), ("halfnatmanA", "halfnatmanB")):
        assert len(subsets[a]) == 20 and np.array_equal(np.union1d(subsets[a], subsets[b]), np.arange(40))
    assert not np.array_equal(subsets["half0A"], subsets["half1A"])


def small_list() -> ImageList:
    entries = [("c2_a", 2), ("c0_a", 0), ("c1_a", 1), ("c2_b", 2), ("c0_b", 0), ("c2_c", 2),
               ("c0_c", 0), ("c1_b", 1)]
    return check_labels(entries, "small.txt", 3)


def test_select_keeps_list_order_and_relabels() -> None:
    subset = select(small_list(), np.array([0, 2]), 3)
    assert subset.paths == ["c2_a", "c0_a", "c2_b", "c0_b", "c2_c", "c0_c"]
    assert subset.labels.tolist() == [1, 0, 1, 0, 1, 0]


def test_reduced_sets_take_the_first_k_of_each_class_in_list_order(tmp_path: Path) -> None:
    assert first_per_class(small_list(), 1).paths == ["c2_a", "c0_a", "c1_a"]
    two = first_per_class(small_list(), 2)
    assert two.paths == ["c2_a", "c0_a", "c1_a", "c2_b", "c0_b", "c1_b"]
    assert two.labels.tolist() == [2, 0, 1, 2, 0, 1]
    train = tmp_path / "train.txt"
    train.write_text("".join(f"{p} {l}\n" for p, l in zip(small_list().paths, small_list().labels)))
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("s0\ns1\ns2\n")
    families = tmp_path / "families.txt"
    families.write_text("s0 natural\ns1 man-made\ns2 natural\n")
    out = tmp_path / "out"
    assert main(["data", "splits", "--train-list", str(train), "--synsets", str(synsets),
                 "--families", str(families), "--reduced", "2,1000", "--splits", "1",
                 "--out", str(out)]) == 0
    assert (out / "reduced0002_train" / "files.txt").read_text() == (
        "c2_a 2\nc0_a 0\nc1_a 1\nc2_b 2\nc0_b 0\nc1_b 1\n")
    assert (out / "reduced1000_train" / "files.txt").read_bytes() == train.read_bytes()
    assert (out / "reduced0002_train" / "idxmap.txt").read_text() == "0 0 s0\n1 1 s1\n2 2 s2\n"
    assert (out / "halfnatmanA_train" / "files.txt").read_text() == (
        "c2_a 1\nc0_a 0\nc2_b 1\nc0_b 0\nc2_c 1\nc0_c 0\n")
    assert (out / "halfnatmanB_train" / "idxmap.txt").read_text() == "1 0 s1\n"
    assert sorted(p.name for p in out.iterdir()) == [
        "half0A_train", "half0B_train", "halfnatmanA_train", "halfnatmanB_train",
        "reduced0002_train", "reduced1000_train", "whole_train"]


@pytest.mark.parametrize("bad, message", [
    ("img.JPEG 1000\n", r"list.txt: img.JPEG: class 1000 outside 0..999"),
    ("img.JPEG -1\n", r"list.txt: img.JPEG: class -1 outside 0..999"),
    ("img.JPEG cat\n", r"list.txt:2: expected '<path> <integer label>'"),
    ("img.JPEG\n", r"list.txt:2: expected '<path> <integer label>'"),
])
def test_bad_lists_stop_with_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, bad: str, message: str
) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text("ILSVRC2012_val_00000001.JPEG 65\n" + bad)
    out = tmp_path / "out"
    assert main(["data", "splits", "--val-list", str(WHOLE_VALID), "--train-list", str(lst),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not out.exists()


def test_lists_of_another_class_count_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"s{c}/img.JPEG {c}\n" for c in range(40)))
    assert main(["data", "splits", "--val-list", str(lst), "--out", str(tmp_path / "o")]) == 2
    assert "960 of 1000 classes have no image (first: class 40)" in capsys.readouterr().err
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"s{c:07d}\n" for c in range(40)))
    assert main(["data", "splits", "--val-list", str(lst), "--synsets", str(synsets),
                 "--out", str(tmp_path / "o")]) == 2
    assert "no family for 40 of the 40 classes (first: s0000000)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_natman_needs_both_families() -> None:
    with pytest.raises(ReplicateError, match="every class is natural"):
        natman_classes(["a", "b"], {"a": "natural", "b": "natural"}, "f.txt")


@pytest.mark.parametrize("text, message", [
    ("s1\ns0\n", "not in sorted order"), ("s0\ns0\n", "listed twice"), ("\n", "no classes")])
def test_bad_synsets_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "synsets.txt"
    path.write_text(text)
    with pytest.raises(ReplicateError, match=message):
        read_synsets(path)
