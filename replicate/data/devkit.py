"""Caffe lists from ILSVRC2012 as distributed: image folders plus the official devkit.

Caffe labels a class by the index of its wnid in sorted order; the devkit numbers classes by its
own ILSVRC2012_ID (1..1000, another order) and gives the validation labels as those IDs.  These
functions rebuild Caffe's lists: training = `<wnid>/<file> <label>`, classes in sorted wnid order
and files in sorted name order within a class (the order of Caffe's train.txt); validation =
`ILSVRC2012_val_<n>.JPEG <label>` in file order, labels mapped ID -> wnid (devkit
`data/meta.mat`) -> sorted index, ground truth from `data/ILSVRC2012_validation_ground_truth.txt`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import scipy.io

from replicate.errors import ReplicateError

META = Path("data") / "meta.mat"
GROUND_TRUTH = Path("data") / "ILSVRC2012_validation_ground_truth.txt"
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


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


def devkit_ids(devkit: Path, wnids: list[str]) -> dict[int, int]:
    """{ILSVRC2012_ID: Caffe label} for the classes of `wnids`, from the devkit's meta.mat."""
    path = devkit / META
    try:
        synsets = scipy.io.loadmat(str(path), squeeze_me=True)["synsets"]
        ids, names = np.atleast_1d(synsets["ILSVRC2012_ID"]), np.atleast_1d(synsets["WNID"])
    except (OSError, ValueError, KeyError) as err:
        raise ReplicateError(f"{path}: cannot read the devkit's synsets ({err})") from None
    label = {w: i for i, w in enumerate(wnids)}
    mapping = {int(i): label[str(w)] for i, w in zip(ids, names) if str(w) in label}
    if len(mapping) != len(wnids):
        missing = sorted(set(wnids) - {str(w) for w in names})
        raise ReplicateError(f"{path}: no ILSVRC2012_ID for class {missing[0] if missing else '?'}")
    return mapping


def val_entries(val_dir: Path, devkit: Path, wnids: list[str]) -> list[tuple[str, int]]:
    """Caffe's validation list, (path, label) pairs, for the images of `val_dir`, labelled from the devkit."""
    if not val_dir.is_dir():
        raise ReplicateError(f"{val_dir}: not a folder")
    mapping = devkit_ids(devkit, wnids)
    path = devkit / GROUND_TRUTH
    try:
        truth = [int(line) for line in path.read_text().split()]
    except (OSError, ValueError) as err:
        raise ReplicateError(f"{path}: cannot read the validation ground truth ({err})") from None
    names = sorted(p.name for p in val_dir.iterdir() if p.is_file())
    if len(names) != len(truth):
        raise ReplicateError(f"{val_dir}: {len(names)} images but {path} labels {len(truth)}")
    entries = []
    for name in names:
        match = VAL_NAME.fullmatch(name)
        if not match or not 1 <= int(match.group(1)) <= len(truth):
            raise ReplicateError(f"{val_dir}/{name}: not an ILSVRC2012_val_<1..{len(truth)}>.JPEG image")
        class_id = truth[int(match.group(1)) - 1]
        if class_id not in mapping:
            raise ReplicateError(f"{path}: line {match.group(1).lstrip('0')}: unknown ILSVRC2012_ID {class_id}")
        entries.append((name, mapping[class_id]))
    return entries
