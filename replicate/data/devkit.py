"""Caffe lists from ILSVRC2012 as distributed: image folders plus the official devkit.

Caffe labels a class by the index of its wnid in sorted order; the devkit numbers classes by its
own ILSVRC2012_ID (1..1000, another order) and gives the validation labels as those IDs.  These
functions rebuild Caffe's lists: training = `<wnid>/<file> <label>`, classes in sorted wnid order
and files in sorted name order within a class (the order of Caffe's train.txt); validation =
`ILSVRC2012_val_<n>.JPEG <label>` in file order, labels mapped ID -> wnid (devkit
`data/meta.mat`) -> sorted index, ground truth from `data/ILSVRC2012_validation_ground_truth.txt`.
The devkit may be its folder or the `ILSVRC2012_devkit_t12.tar.gz` it ships as.  meta.mat lists
1,860 synsets: the 1,000 classes (IDs 1..1000, no children) and 860 inner WordNet nodes above them,
whose wnids are no class and are left out.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from replicate.errors import ReplicateError

META = Path("data") / "meta.mat"
GROUND_TRUTH = Path("data") / "ILSVRC2012_validation_ground_truth.txt"
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


@dataclass(frozen=True)
class Devkit:
    """The two devkit files the labels need, as bytes, and where they came from (for errors)."""

    meta: bytes
    meta_where: str
    ground_truth: bytes
    ground_truth_where: str


def read_devkit(path: Path) -> Devkit:
    """The devkit's meta.mat and validation ground truth, from its folder or its .tar.gz."""
    if path.is_dir():
        files = []
        for part in (META, GROUND_TRUTH):
            try:
                files.append((path / part).read_bytes())
            except OSError as err:
                raise ReplicateError(f"{path / part}: cannot read the devkit ({err.strerror})") from None
        return Devkit(files[0], str(path / META), files[1], str(path / GROUND_TRUTH))
    if not path.is_file():
        raise ReplicateError(f"{path}: devkit not found (give its folder or ILSVRC2012_devkit_t12.tar.gz)")
    try:
        with tarfile.open(path) as tar:
            found = {}
            for member in tar:
                for part in (META, GROUND_TRUTH):
                    if member.isfile() and (member.name.endswith(f"/{part}") or member.name == str(part)):
                        found[part] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as err:
        raise ReplicateError(f"{path}: cannot read the devkit archive ({err})") from None
    for part in (META, GROUND_TRUTH):
        if part not in found:
            raise ReplicateError(f"{path}: the devkit archive holds no {part}")
    return Devkit(found[META], f"{path}:{META}", found[GROUND_TRUTH], f"{path}:{GROUND_TRUTH}")


def train_entries(train_dir: Path, wnids: list[str]) -> list[tuple[str, int]]:
    """Caffe's training list, (path, label) pairs, from `train_dir/<wnid>/*` (one folder per class)."""
    if not train_dir.is_dir():
        raise ReplicateError(f"{train_dir}: not a folder")
    folders = {p.name for p in train_dir.iterdir() if p.is_dir()}
    unknown = sorted(folders - set(wnids))
    if unknown:
        raise ReplicateError(f"{train_dir}: folder {unknown[0]} is not one of the {len(wnids)} classes")
    entries = []
    for label, wnid in enumerate(wnids):
        folder = train_dir / wnid
        if wnid not in folders:
            raise ReplicateError(f"{train_dir}: no folder for class {label} ({wnid})")
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        entries += [(f"{wnid}/{name}", label) for name in names]
    return entries


def _synsets(devkit: Devkit, *fields: str) -> list[np.ndarray]:
    """These fields of every synset of meta.mat (ILSVRC2012_ID, WNID, num_train_images, ...)."""
    try:
        synsets = scipy.io.loadmat(io.BytesIO(devkit.meta), squeeze_me=True)["synsets"]
        return [np.atleast_1d(synsets[name]) for name in fields]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ReplicateError(f"{devkit.meta_where}: cannot read the devkit's synsets ({err})") from None


def devkit_ids(devkit: Devkit, wnids: list[str]) -> dict[int, int]:
    """{ILSVRC2012_ID: Caffe label} for the classes of `wnids`, from the devkit's meta.mat."""
    ids, names = _synsets(devkit, "ILSVRC2012_ID", "WNID")
    label = {w: i for i, w in enumerate(wnids)}
    mapping = {int(i): label[str(w)] for i, w in zip(ids, names) if str(w) in label}
    if len(mapping) != len(wnids):
        missing = sorted(set(wnids) - {str(w) for w in names})
        raise ReplicateError(f"{devkit.meta_where}: no ILSVRC2012_ID for class {missing[0] if missing else '?'}")
    return mapping


def train_counts(devkit: Devkit, wnids: list[str]) -> np.ndarray:
    """How many training images each class of `wnids` has: meta.mat's num_train_images."""
    names, counts = _synsets(devkit, "WNID", "num_train_images")
    count = {str(w): int(n) for w, n in zip(names, counts)}
    missing = [w for w in wnids if w not in count]
    if missing:
        raise ReplicateError(f"{devkit.meta_where}: no num_train_images for class {missing[0]}")
    return np.array([count[w] for w in wnids], np.int64)


def val_truth(devkit: Devkit, wnids: list[str]) -> list[tuple[str, int]]:
    """Every validation image the devkit labels, (ILSVRC2012_val_<n>.JPEG, Caffe label), in order."""
    mapping = devkit_ids(devkit, wnids)
    try:
        truth = [int(line) for line in devkit.ground_truth.decode().split()]
    except (UnicodeDecodeError, ValueError) as err:
        raise ReplicateError(f"{devkit.ground_truth_where}: cannot read the validation ground truth ({err})") from None
    entries = []
    for n, class_id in enumerate(truth, start=1):
        if class_id not in mapping:
            raise ReplicateError(f"{devkit.ground_truth_where}: line {n}: unknown ILSVRC2012_ID {class_id}")
        entries.append((f"ILSVRC2012_val_{n:08d}.JPEG", mapping[class_id]))
    return entries


def val_labels(names: list[str], devkit: Devkit, wnids: list[str], where: str,
               complete: bool = True) -> list[tuple[str, int]]:
    """(name, Caffe label) for validation images named `ILSVRC2012_val_<n>.JPEG`, in name order;
    `complete`: every image the devkit labels must be there."""
    truth = val_truth(devkit, wnids)
    if complete and len(names) != len(truth):
        raise ReplicateError(f"{where}: {len(names)} images but {devkit.ground_truth_where} labels {len(truth)}")
    entries = []
    for name in sorted(names):
        match = VAL_NAME.fullmatch(name)
        if not match or not 1 <= int(match.group(1)) <= len(truth):
            raise ReplicateError(f"{where}/{name}: not an ILSVRC2012_val_<1..{len(truth)}>.JPEG image")
        entries.append((name, truth[int(match.group(1)) - 1][1]))
    return entries


def val_entries(val_dir: Path, devkit: Path | Devkit, wnids: list[str]) -> list[tuple[str, int]]:
    """Caffe's validation list, (path, label) pairs, for the images of `val_dir`, labelled from the devkit."""
    if not val_dir.is_dir():
        raise ReplicateError(f"{val_dir}: not a folder")
    kit = devkit if isinstance(devkit, Devkit) else read_devkit(devkit)
    return val_labels([p.name for p in val_dir.iterdir() if p.is_file()], kit, wnids, str(val_dir))
