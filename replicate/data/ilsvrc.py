"""Where each ILSVRC2012 image is, in Caffe's list order, from whatever form the user has.

Training images: `ILSVRC2012_img_train.tar` (a tar of 1,000 per-class tars `<wnid>.tar`), a folder
of those class tars, a folder of class folders `<wnid>/`, or Caffe's `train.txt` with the image
root.  Validation images: `ILSVRC2012_img_val.tar` (50,000 flat JPEGs), its folder, or `val.txt`
with the root; from the tar or folder the labels come from the devkit (`replicate.data.devkit`).

Nothing is extracted: an image inside a tar is read in place at its byte offset (tars of the
ImageNet kind are uncompressed), so the 140 GB archive needs no second copy on disk.  Listing the
members reads only their 512-byte headers.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replicate.data.devkit import read_devkit, train_entries, val_labels
from replicate.data.imagelist import read_image_list
from replicate.data.splits import ImageList, check_labels
from replicate.errors import ReplicateError


@dataclass(frozen=True)
class Images:
    """Images in list order: their list names and labels, and where their bytes are (file, byte
    offset, size; size -1 = the whole file)."""

    names: list[str]
    labels: np.ndarray
    files: list[str]
    file_of: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def image_list(self, source: str) -> ImageList:
        return ImageList(source, self.names, self.labels)


def read_image_bytes(file: str, offset: int, size: int) -> bytes:
    """The bytes of one image: a whole file, or `size` bytes at `offset` inside a tar."""
    with open(file, "rb") as f:
        if size < 0:
            return f.read()
        data = os.pread(f.fileno(), size, offset)
    if len(data) != size:
        raise OSError(0, f"archive ends {size - len(data)} bytes early")
    return data


def _whole_files(entries: list[tuple[str, int]], root: str) -> Images:
    n = len(entries)
    return Images(
        [name for name, _ in entries], np.fromiter((label for _, label in entries), np.int64, n),
        [os.path.join(root, name) for name, _ in entries], np.arange(n, dtype=np.int64),
        np.zeros(n, np.int64), np.full(n, -1, np.int64),
    )


def _in_tar(entries: list[tuple[str, int, int, int, int]], files: list[str]) -> Images:
    """Images from (name, label, file index, offset, size) tuples."""
    n = len(entries)
    column = lambda k, dtype: np.fromiter((e[k] for e in entries), dtype, n)  # noqa: E731
    return Images([e[0] for e in entries], column(1, np.int64), files, column(2, np.int64), column(3, np.int64),
                  column(4, np.int64))


def _members(tar: tarfile.TarFile) -> list[tuple[str, int, int]]:
    """(base name, offset in the underlying file, size) of a tar's regular files (tarfile counts
    offsets from the file's start, also for a tar opened at an offset inside another)."""
    return [(Path(m.name).name, m.offset_data, m.size) for m in tar if m.isfile()]


def _class_tars(where: str, found: dict[str, tuple[str, int]], wnids: list[str]) -> None:
    unknown = sorted(set(found) - set(wnids))
    if unknown:
        raise ReplicateError(f"{where}: {unknown[0]}.tar is not one of the {len(wnids)} classes")
    for label, wnid in enumerate(wnids):
        if wnid not in found:
            raise ReplicateError(f"{where}: no {wnid}.tar for class {label} ({wnid})")


def _train_from_class_tars(where: str, tars: dict[str, tuple[str, int]], wnids: list[str]) -> Images:
    """`tars`: wnid -> (file, offset of the class tar in it)."""
    _class_tars(where, tars, wnids)
    files = sorted({file for file, _ in tars.values()})
    file_index = {f: i for i, f in enumerate(files)}
    entries = []
    for label, wnid in enumerate(wnids):
        file, offset = tars[wnid]
        try:
            with open(file, "rb") as raw:
                raw.seek(offset)
                with tarfile.open(fileobj=raw, mode="r:") as inner:
                    members = _members(inner)
        except (tarfile.TarError, OSError) as err:
            raise ReplicateError(f"{where}: {wnid}.tar cannot be read ({err})") from None
        entries += [(f"{wnid}/{name}", label, file_index[file], at, size) for name, at, size in sorted(members)]
    return _in_tar(entries, files)


def train_images(source: Path, wnids: list[str], root: Path | None = None) -> Images:
    """The training images of `source` (see the module doc) in Caffe's train.txt order."""
    if root is not None or source.suffix == ".txt":
        if root is None:
            raise ReplicateError(f"{source}: a Caffe list needs --train-root, the folder its paths are in")
        images = _whole_files(read_image_list(source), str(root))
    elif source.is_dir():
        tars = sorted(source.glob("*.tar"))
        if tars:
            images = _train_from_class_tars(str(source), {p.stem: (str(p), 0) for p in tars}, wnids)
        else:
            images = _whole_files(train_entries(source, wnids), str(source))
    elif source.is_file():
        try:
            with tarfile.open(source, mode="r:") as outer:
                inner = {Path(m.name).stem: (str(source), m.offset_data)
                         for m in outer if m.isfile() and m.name.endswith(".tar")}
        except (tarfile.TarError, OSError) as err:
            raise ReplicateError(f"{source}: not a readable (uncompressed) tar ({err})") from None
        images = _train_from_class_tars(str(source), inner, wnids)
    else:
        raise ReplicateError(f"{source}: training images not found (a tar, a folder or a Caffe list)")
    check_labels(list(zip(images.names, images.labels.tolist())), str(source), len(wnids))
    return images


def val_images(source: Path, wnids: list[str], devkit: Path | None, root: Path | None = None) -> Images:
    """The validation images of `source` (see the module doc) in Caffe's val.txt order."""
    if root is not None or source.suffix == ".txt":
        if root is None:
            raise ReplicateError(f"{source}: a Caffe list needs --val-root, the folder its paths are in")
        images = _whole_files(read_image_list(source), str(root))
    else:
        if devkit is None:
            raise ReplicateError(f"{source}: validation images need --devkit (the labels are in it)")
        kit = read_devkit(devkit)
        if source.is_dir():
            names = [p.name for p in source.iterdir() if p.is_file()]
            images = _whole_files(val_labels(names, kit, wnids, str(source)), str(source))
        elif source.is_file():
            try:
                with tarfile.open(source, mode="r:") as tar:
                    members = {name: (at, size) for name, at, size in _members(tar)}
            except (tarfile.TarError, OSError) as err:
                raise ReplicateError(f"{source}: not a readable (uncompressed) tar ({err})") from None
            labelled = val_labels(list(members), kit, wnids, str(source))
            images = _in_tar([(name, label, 0, *members[name]) for name, label in labelled], [str(source)])
        else:
            raise ReplicateError(f"{source}: validation images not found (a tar, a folder or a Caffe list)")
    check_labels(list(zip(images.names, images.labels.tolist())), str(source), len(wnids))
    return images
