"""Where each ILSVRC2012 image is, in Caffe's list order, from whatever form the user has.

Training images: `ILSVRC2012_img_train.tar` (a tar of 1,000 per-class tars `<wnid>.tar`), a folder
of those class tars, a folder of class folders `<wnid>/`, or Caffe's `train.txt` with the image
root.  Validation images: `ILSVRC2012_img_val.tar` (50,000 flat JPEGs), its folder, or `val.txt`
with the root; from the tar or folder the labels come from the devkit (`replicate.data.devkit`).

Nothing is extracted: an image inside a tar is read in place at its byte offset (tars of the
ImageNet kind are uncompressed), so the 140 GB archive needs no second copy on disk.  Listing the
members reads only their 512-byte headers.

A damaged tar lists what it holds and says what is wrong (`Images.damage`, per class): a tar cut
inside a member (the member is left out), or ending without its end-of-archive block (cut at a
member boundary: tarfile itself stops there silently), or with an unreadable header.  A class tar
inside the training tar is read only up to the end of its member, so a short class cannot take
the next classes' bytes for its own.  Whether images are missing is for the count check to say
(`replicate.data.complete`).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from replicate.data.devkit import read_devkit, train_entries, val_labels, val_truth
from replicate.data.imagelist import read_image_list
from replicate.data.splits import ImageList, check_labels
from replicate.errors import ReplicateError


@dataclass(frozen=True)
class Images:
    """Images in list order: their list names and labels, where their bytes are (file, byte
    offset, size; size -1 = the whole file), and what is wrong with the tar of a class (label ->
    why), where one is damaged."""

    names: list[str]
    labels: np.ndarray
    files: list[str]
    file_of: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    damage: dict[int, str] = field(default_factory=dict)

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


def _whole_files(entries: list[tuple[str, int]], root: str, damage: dict[int, str] | None = None) -> Images:
    n = len(entries)
    return Images(
        [name for name, _ in entries], np.fromiter((label for _, label in entries), np.int64, n),
        [os.path.join(root, name) for name, _ in entries], np.arange(n, dtype=np.int64),
        np.zeros(n, np.int64), np.full(n, -1, np.int64), damage or {},
    )


def _in_tar(entries: list[tuple[str, int, int, int, int]], files: list[str], damage: dict[int, str]) -> Images:
    """Images from (name, label, file index, offset, size) tuples."""
    n = len(entries)
    column = lambda k, dtype: np.fromiter((e[k] for e in entries), dtype, n)  # noqa: E731
    return Images([e[0] for e in entries], column(1, np.int64), files, column(2, np.int64), column(3, np.int64),
                  column(4, np.int64), damage)


class _Slice(io.RawIOBase):
    """Bytes [start, start + size) of an open file, as a file of their own (read with pread)."""

    def __init__(self, fd: int, start: int, size: int):
        self.fd, self.start, self.size, self.pos = fd, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self.pos = pos + (0, self.pos, self.size)[whence]
        return self.pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = os.pread(self.fd, max(0, min(len(buffer), self.size - self.pos)), self.start + self.pos)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


@dataclass
class _Listing:
    """A tar's regular files whose bytes are all there (base name, offset in the file, size), the
    one member cut short if any (name, offset, bytes held), and what is wrong ('' when nothing)."""

    members: list[tuple[str, int, int]]
    cut: tuple[str, int, int] | None
    damage: str


def _list_tar(file: str, start: int, size: int) -> _Listing:
    """The tar at [start, start + size) of `file` (see `_Listing`)."""
    members: list[tuple[str, int, int]] = []
    last = lambda: f"after {members[-1][0]}" if members else "at its start"  # noqa: E731
    with open(file, "rb") as raw:
        window = _Slice(raw.fileno(), start, size)
        try:
            with tarfile.open(fileobj=window, mode="r:") as tar:
                try:
                    for member in tar:
                        name = Path(member.name).name
                        if member.offset_data + member.size > size:
                            held = max(0, size - member.offset_data)
                            return _Listing(members, (name, start + member.offset_data, held),
                                            f"cut inside {name} ({held:,} of its {member.size:,} bytes)")
                        if member.isfile():
                            members.append((name, start + member.offset_data, member.size))
                except tarfile.ReadError:  # tarfile's "unexpected end of data": cut in the last padding
                    return _Listing(members, None, f"cut {last()}")
                end = tar.offset
        except tarfile.ReadError as err:
            return _Listing([], None, f"not a readable (uncompressed) tar ({err})")
        block = os.pread(raw.fileno(), tarfile.BLOCKSIZE, start + end) if end < size else b""
    if len(block) < tarfile.BLOCKSIZE:  # tarfile stops at the end of the data without a word
        return _Listing(members, None, f"cut {last()} (no end-of-archive block)")
    if block.strip(b"\0"):
        return _Listing(members, None, f"unreadable header {last()}")
    return _Listing(members, None, "")


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError as err:
        raise ReplicateError(f"{path}: cannot read ({err.strerror})") from None


def _class_tars(where: str, found: dict[str, tuple[str, int, int]], wnids: list[str]) -> None:
    unknown = sorted(set(found) - set(wnids))
    if unknown:
        raise ReplicateError(f"{where}: {unknown[0]}.tar is not one of the {len(wnids)} classes")
    for label, wnid in enumerate(wnids):
        if wnid not in found:
            raise ReplicateError(f"{where}: no {wnid}.tar for class {label} ({wnid})")


def _train_from_class_tars(where: str, tars: dict[str, tuple[str, int, int]], wnids: list[str],
                           damage: dict[str, str]) -> Images:
    """`tars`: wnid -> (file, offset of the class tar in it, its size); `damage`: wnid -> what
    is already known to be wrong with a class tar (the training tar cut inside it)."""
    _class_tars(where, tars, wnids)
    files = sorted({file for file, _, _ in tars.values()})
    file_index = {f: i for i, f in enumerate(files)}
    entries, found_damage = [], {}
    for label, wnid in enumerate(wnids):
        file, offset, size = tars[wnid]
        try:
            listing = _list_tar(file, offset, size)
        except OSError as err:
            raise ReplicateError(f"{where}: {wnid}.tar cannot be read ({err.strerror or err})") from None
        wrong = "; ".join(w for w in (damage.get(wnid, ""), listing.damage) if w)
        if wrong:
            found_damage[label] = f"{wnid}.tar {wrong}"
        entries += [(f"{wnid}/{name}", label, file_index[file], at, n) for name, at, n in sorted(listing.members)]
    return _in_tar(entries, files, found_damage)


def _train_tar(source: Path, wnids: list[str]) -> Images:
    """The images of ILSVRC2012_img_train.tar, each class tar read up to the end of its member."""
    size = _file_size(str(source))
    try:
        outer = _list_tar(str(source), 0, size)
    except OSError as err:
        raise ReplicateError(f"{source}: cannot read ({err.strerror or err})") from None
    inner = {Path(name).stem: (str(source), at, n) for name, at, n in outer.members if name.endswith(".tar")}
    if not inner and outer.damage:
        raise ReplicateError(f"{source}: {outer.damage}")
    damage = {}
    if outer.cut is not None and outer.cut[0].endswith(".tar"):  # what is there of the class tar is read
        name, at, held = outer.cut
        inner[Path(name).stem] = (str(source), at, held)
        damage[Path(name).stem] = f"(the training tar is {outer.damage})"
    return _train_from_class_tars(str(source), inner, wnids, damage)


def train_images(source: Path, wnids: list[str], root: Path | None = None) -> Images:
    """The training images of `source` (see the module doc) in Caffe's train.txt order.  A Caffe
    list's labels are checked here; ILSVRC2012's files are labelled by wnid, and a class they
    leave short or empty is for the count check to report."""
    if root is not None or source.suffix == ".txt":
        if root is None:
            raise ReplicateError(f"{source}: a Caffe list needs --train-root, the folder its paths are in")
        images = _whole_files(read_image_list(source), str(root))
        check_labels(list(zip(images.names, images.labels.tolist())), str(source), len(wnids))
    elif source.is_dir():
        tars = sorted(source.glob("*.tar"))
        if tars:
            images = _train_from_class_tars(str(source), {p.stem: (str(p), 0, _file_size(str(p))) for p in tars},
                                            wnids, {})
        else:
            images = _whole_files(train_entries(source, wnids), str(source))
    elif source.is_file():
        images = _train_tar(source, wnids)
    else:
        raise ReplicateError(f"{source}: training images not found (a tar, a folder or a Caffe list)")
    return images


def _missing(labelled: list[tuple[str, int]], truth: list[tuple[str, int]]) -> dict[int, str]:
    """Per class, the validation images the devkit labels that are not there (names shown)."""
    present = {name for name, _ in labelled}
    missing: dict[int, list[str]] = {}
    for name, label in truth:
        if name not in present:
            missing.setdefault(label, []).append(name)
    return {label: f"missing {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}"
            for label, names in missing.items()}


def val_images(source: Path, wnids: list[str], devkit: Path | None, root: Path | None = None) -> Images:
    """The validation images of `source` (see the module doc) in Caffe's val.txt order.  From the
    tar or the folder, images the devkit labels but that are not there are named in `damage`."""
    if root is not None or source.suffix == ".txt":
        if root is None:
            raise ReplicateError(f"{source}: a Caffe list needs --val-root, the folder its paths are in")
        images = _whole_files(read_image_list(source), str(root))
        check_labels(list(zip(images.names, images.labels.tolist())), str(source), len(wnids))
    else:
        if devkit is None:
            raise ReplicateError(f"{source}: validation images need --devkit (the labels are in it)")
        kit = read_devkit(devkit)
        truth = val_truth(kit, wnids)
        if source.is_dir():
            names = [p.name for p in source.iterdir() if p.is_file()]
            labelled = val_labels(names, kit, wnids, str(source), complete=False)
            images = _whole_files(labelled, str(source), _missing(labelled, truth))
        elif source.is_file():
            try:
                listing = _list_tar(str(source), 0, _file_size(str(source)))
            except OSError as err:
                raise ReplicateError(f"{source}: cannot read ({err.strerror or err})") from None
            if not listing.members and listing.damage:
                raise ReplicateError(f"{source}: {listing.damage}")
            members = {name: (at, size) for name, at, size in listing.members}
            labelled = val_labels(list(members), kit, wnids, str(source), complete=False)
            damage = _missing(labelled, truth)
            if listing.damage:
                damage = {label: f"{why} ({source.name} {listing.damage})" for label, why in damage.items()}
            images = _in_tar([(name, label, 0, *members[name]) for name, label in labelled], [str(source)], damage)
        else:
            raise ReplicateError(f"{source}: validation images not found (a tar, a folder or a Caffe list)")
    return images
