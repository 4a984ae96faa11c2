"""The paper's datasets as Caffe image lists: random halves, natural/man-made halves, reduced sets.

Input: Caffe's lists (`<image path> <class>` a line, class = index of the wnid in sorted order)
of the training and validation images.  Output, under one folder, a set folder per dataset with
the set's `files.txt` (the same format) and its `idxmap.txt`:

- `whole_{train,valid}`: every class (the 1000-class `netbase`), lines re-written as `%s %d`;
- `half{s}{A,B}_{train,valid}`, s = 0..3: the random halves.  numpy's legacy generator seeded with
  the one-element list `[s]` (init_by_array, not the int path) draws
  `choice(arange(C), C // 2, replace=False)`; sorted, those are A, the rest B;
- `halfnatman{A,B}_{train,valid}`: A = the natural classes, B = the man-made ones (families file);
- `reduced{k:04d}_train`: the first k images of each class in list order, all classes, labels kept.

A half keeps the order of the full list and relabels its classes 0..N-1 in increasing original
index; lines are `"%s %d\\n" % (path, new_label)`.  With C = 1000 this reproduces the authors'
files byte for byte (their published md5s are checked by the tests).

`idxmap.txt` has one line per class of the set, in new-label order: `<original> <new> <wnid>`,
e.g. `3 1 n01491361`: original class 3 (wnid n01491361) is class 1 of this set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replicate.data.families import MAN_MADE, NATURAL
from replicate.data.imagelist import read_image_list
from replicate.errors import ReplicateError
from replicate.io.binary import write_atomic

PAPER_SPLITS = 4
PAPER_REDUCED = (1, 2, 5, 10, 25, 50, 100, 250, 500, 750, 1000)


@dataclass(frozen=True)
class ImageList:
    """A Caffe image list: paths in list order and their integer labels."""

    source: str
    paths: list[str]
    labels: np.ndarray  # int64, one per path


@dataclass(frozen=True)
class ClassSubset:
    """A dataset defined by the original classes it keeps (sorted: new label = position)."""

    name: str
    classes: np.ndarray


def read_synsets(path: Path) -> list[str]:
    """Class wnids in label order: the first word of each non-blank line (Caffe's synsets.txt,
    or synset_words.txt)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ReplicateError(f"{path}: cannot read synsets ({err.strerror})") from None
    wnids = [line.split()[0] for line in lines if line.strip()]
    if not wnids:
        raise ReplicateError(f"{path}: no classes listed")
    if len(set(wnids)) != len(wnids):
        raise ReplicateError(f"{path}: a class is listed twice")
    if wnids != sorted(wnids):
        raise ReplicateError(f"{path}: classes are not in sorted order (Caffe labels sorted wnids)")
    return wnids


def check_labels(entries: list[tuple[str, int]], source: str, num_classes: int) -> ImageList:
    """An ImageList of `(path, label)` pairs whose labels all lie in [0, C) and that leave no
    class without an image (a list that does belongs to other synsets)."""
    labels = np.fromiter((label for _, label in entries), dtype=np.int64, count=len(entries))
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if outside.size:
        path, label = entries[outside[0]]
        raise ReplicateError(
            f"{source}: {path}: class {label} outside 0..{num_classes - 1} "
            f"({num_classes} classes in the synsets)"
        )
    empty = np.flatnonzero(np.bincount(labels, minlength=num_classes) == 0)
    if empty.size:
        raise ReplicateError(
            f"{source}: {empty.size} of {num_classes} classes have no image (first: class "
            f"{empty[0]}); is the synsets file the one this list was made with?"
        )
    return ImageList(source, [path for path, _ in entries], labels)


def read_list(path: Path, num_classes: int) -> ImageList:
    """Read a Caffe image list file (Caffe's parsing: see `replicate.data.imagelist`) and check
    its labels against the number of classes."""
    return check_labels(read_image_list(path), str(path), num_classes)


def random_half(num_classes: int, seed: int) -> np.ndarray:
    """The A classes of random split `seed`, sorted (the authors' draw, see the module doc)."""
    rng = np.random.RandomState([seed])  # list seed: init_by_array, as numpy.random.seed([s])
    return np.sort(rng.choice(np.arange(num_classes), num_classes // 2, replace=False))


def natman_classes(wnids: list[str], families: dict[str, str], source: str) -> np.ndarray:
    """Labels of the natural classes (halfnatman A), given {wnid: family} covering every class."""
    missing = [w for w in wnids if w not in families]
    if missing:
        raise ReplicateError(
            f"{source}: no family for {len(missing)} of the {len(wnids)} classes "
            f"(first: {missing[0]}); give the families file of this dataset"
        )
    natural = np.asarray([i for i, w in enumerate(wnids) if families[w] == NATURAL], np.int64)
    if natural.size in (0, len(wnids)):
        raise ReplicateError(f"{source}: every class is {MAN_MADE if natural.size == 0 else NATURAL}")
    return natural


def paper_subsets(num_classes: int, natural: np.ndarray, splits: int = PAPER_SPLITS) -> list[ClassSubset]:
    """The class subsets of the paper: whole, half{s}A/B for s < splits, halfnatmanA/B."""
    everything = np.arange(num_classes)
    subsets = [ClassSubset("whole", everything)]
    for seed in range(splits):
        a = random_half(num_classes, seed)
        subsets += [ClassSubset(f"half{seed}A", a),
                    ClassSubset(f"half{seed}B", np.setdiff1d(everything, a))]
    subsets += [ClassSubset("halfnatmanA", np.sort(natural)),
                ClassSubset("halfnatmanB", np.setdiff1d(everything, natural))]
    return subsets


def select(images: ImageList, classes: np.ndarray, num_classes: int) -> ImageList:
    """The images of `classes` in list order, relabelled by their position in `classes`."""
    new_label = np.full(num_classes, -1, dtype=np.int64)
    new_label[classes] = np.arange(len(classes))
    keep = np.flatnonzero(new_label[images.labels] >= 0)
    return ImageList(images.source, [images.paths[i] for i in keep], new_label[images.labels[keep]])


def first_per_class(images: ImageList, k: int) -> ImageList:
    """The first `k` images of every class in list order (labels unchanged)."""
    order = np.argsort(images.labels, kind="stable")
    sorted_labels = images.labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order)) - starts
    keep = np.flatnonzero(rank < k)
    return ImageList(images.source, [images.paths[i] for i in keep], images.labels[keep])


def format_list(images: ImageList) -> bytes:
    """Caffe list text, `"%s %d\\n"` a line, exactly as the authors wrote their lists."""
    return "".join(f"{p} {l}\n" for p, l in zip(images.paths, images.labels.tolist())).encode()


def format_idxmap(classes: np.ndarray, wnids: list[str]) -> bytes:
    """`<original> <new> <wnid>` a line, in new-label order."""
    return "".join(f"{c} {n} {wnids[c]}\n" for n, c in enumerate(classes.tolist())).encode()


def write_set(out: Path, name: str, images: ImageList, classes: np.ndarray, wnids: list[str]) -> None:
    """Write `<out>/<name>/files.txt` and `idxmap.txt`, each atomically."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "files.txt", format_list(images))
    write_atomic(folder / "idxmap.txt", format_idxmap(classes, wnids))


def paper_sets(
    wnids: list[str],
    natural: np.ndarray,
    train: ImageList | None,
    valid: ImageList | None,
    splits: int = PAPER_SPLITS,
    reduced: tuple[int, ...] = PAPER_REDUCED,
) -> Iterator[tuple[str, ImageList, np.ndarray]]:
    """(set name, its images, its classes) of every set of the paper for the lists given."""
    num_classes = len(wnids)
    for subset in paper_subsets(num_classes, natural, splits):
        for suffix, images in (("train", train), ("valid", valid)):
            if images is not None:
                yield f"{subset.name}_{suffix}", select(images, subset.classes, num_classes), subset.classes
    if train is not None:
        everything = np.arange(num_classes)
        for k in reduced:
            yield f"reduced{k:04d}_train", first_per_class(train, k), everything


def write_splits(
    out: Path,
    wnids: list[str],
    natural: np.ndarray,
    train: ImageList | None,
    valid: ImageList | None,
    splits: int = PAPER_SPLITS,
    reduced: tuple[int, ...] = PAPER_REDUCED,
) -> list[str]:
    """Write every set of the paper for the lists given; return the set names written.

    The lists are parsed and checked before this is called, so nothing here can fail on bad
    input: either every set is written or (on an I/O error) the error is not the user's list.
    """
    written = []
    for name, images, classes in paper_sets(wnids, natural, train, valid, splits, reduced):
        write_set(out, name, images, classes, wnids)
        written.append(name)
    return written
