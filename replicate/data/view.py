"""A set of the paper as a view into the store: which records, with which labels, in which order.

A view lives in its set's folder beside the set's Caffe list (`files.txt`, `idxmap.txt`):

- `view.npy`: (store record, label) per image in reading order, the set's own seeded shuffle of
  its list (as `convert_imageset --shuffle` ordered ImageNet's LMDBs; Caffe's Data layer reads
  front to back), labels as in the list (a half relabels its classes 0..499);
- `view.json`: the store (relative path), the seed, the number of records, how many list images
  the store lacks (they failed to decode), the store's format, and the gaps accepted in the
  classes of the set (`gaps`, only where there are any: replicate.data.complete);
- `mean.binaryproto` (training sets): compute_image_mean over the view in its order, the same
  float32 sums Caffe's tool makes on the LMDB `export_lmdb` writes.

8 bytes per image: all the paper's sets (~10.4M images) take ~85 MB of views over one store,
where separate LMDBs would repeat the pixels (~2.1 TB raw).  The Data layer reads a view when its
`source` is a view folder (`ViewSource`); `export_lmdb` writes an ordinary Caffe LMDB of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from replicate.data.complete import Gap
from replicate.data.image import decode_image
from replicate.data.item import Encoded, Item, identity_digest
from replicate.data.lmdb_io import LmdbWriter, array_datum, check_lmdb_out, encoded_datum, lmdb_bytes, make_key
from replicate.data.mean import mean_of
from replicate.data.progress import Progress
from replicate.data.space import disk_full, require_space
from replicate.data.splits import ImageList
from replicate.data.store import Store
from replicate.errors import ReplicateError
from replicate.io.binary import write_atomic

VIEW_FILE = "view.json"
RECORDS_FILE = "view.npy"
MEAN_FILE = "mean.binaryproto"
VIEW_DTYPE = np.dtype([("record", "<i4"), ("label", "<i4")])


def is_view(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / VIEW_FILE).is_file()


def view_seed(name: str, seed: int) -> int:
    """Each set's own shuffle seed: the prepare seed offset by a hash of the set's name."""
    return (seed + zlib.crc32(name.encode())) % 2**32


def check_seed(out: Path, seed: int) -> None:
    """Refuse a prepare `seed` other than the one the views already in `out` were shuffled with:
    rewritten, they would hand the nets that train or resume on them other batches."""
    others: dict[int, list[str]] = {}
    for path in sorted(out.glob(f"*/{VIEW_FILE}")):
        try:
            recorded = int(json.loads(path.read_text())["seed"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a view of ours: left to the view's own writing to report
        name = path.parent.name
        if recorded != view_seed(name, seed):
            others.setdefault((recorded - zlib.crc32(name.encode())) % 2**32, []).append(name)
    if others:
        old, names = next(iter(others.items()))
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ReplicateError(f"{out}: its views ({shown}) were shuffled with --seed {old}; --seed {seed} would "
                             f"reorder them under the nets that train or resume on them: give --seed {old}, or "
                             "another --out")


def write_view(folder: Path, name: str, images: ImageList, part: str, store: Store, records_of: dict[str, int],
               seed: int, gaps: Sequence[Gap] = ()) -> bool:
    """Write the view of `images` (a set's list) into `folder`, with the accepted `gaps` of its
    classes; False when it was already there as is (its mean is then still good)."""
    s = view_seed(name, seed)
    order = np.random.RandomState(s).permutation(len(images.paths))
    found = np.fromiter((records_of.get(images.paths[i], -1) for i in order), np.int64, len(order))
    keep = found >= 0
    rows = np.zeros(int(keep.sum()), VIEW_DTYPE)
    rows["record"], rows["label"] = found[keep], images.labels[order][keep]
    buffer = io.BytesIO()
    np.save(buffer, rows)
    meta = {"store": os.path.relpath(store.path, folder), "part": part, "seed": s, "records": len(rows),
            "skipped": int((~keep).sum()), "format": store.format}
    if gaps:
        meta["gaps"] = [gap.as_json() for gap in gaps]
    text = json.dumps(meta, indent=1).encode()
    unchanged = (folder / VIEW_FILE).is_file() and (folder / VIEW_FILE).read_bytes() == text and \
        (folder / RECORDS_FILE).read_bytes() == buffer.getvalue()
    if not unchanged:
        (folder / MEAN_FILE).unlink(missing_ok=True)
        write_atomic(folder / RECORDS_FILE, buffer.getvalue())
        write_atomic(folder / VIEW_FILE, text)
    return not unchanged


class View:
    """A view folder, opened: its records, labels and store."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self.meta = json.loads((self.path / VIEW_FILE).read_text())
            rows = np.load(self.path / RECORDS_FILE)
        except (OSError, ValueError) as err:
            raise ReplicateError(f"{self.path}: not a readable view ({err})") from None
        self.records = np.ascontiguousarray(rows["record"])
        self.labels = np.ascontiguousarray(rows["label"])
        if not len(self.records):
            raise ReplicateError(f"{self.path}: the view holds no records")
        self.store = Store(self.path / self.meta["store"])

    def __len__(self) -> int:
        return len(self.records)

    def where(self, index: int) -> str:
        return f"{self.path}[{index}: {self.store.name(int(self.records[index]))}]"

    def image(self, index: int) -> np.ndarray:
        """Image `index` as CHW uint8, decoded natively for a jpeg store (DecodeDatumNative)."""
        record = int(self.records[index])
        if self.store.format == "raw":
            return self.store.raw(record)
        return decode_image(self.store.encoded(record), None, self.where(index)).transpose(2, 0, 1)

    def close(self) -> None:
        self.store.close()


class ViewSource:
    """A view as a data layer's source (replicate.data.sources.Source): position p is image p mod N
    of the view's order."""

    def __init__(self, path: str | os.PathLike[str]):
        self.view = View(path)
        self._raw = self.view.store.format == "raw"
        self._identity: str | None = None

    def __len__(self) -> int:
        return len(self.view)

    def index(self, position: int, seed: int) -> int:
        return position % len(self.view)

    def item(self, index: int) -> Item:
        store, record = self.view.store, int(self.view.records[index])
        label = int(self.view.labels[index])
        where = f"{self.view.path}[{index}]"
        if self._raw:
            return Item(store.raw(record), label, where)
        _, height, width = store.shape(record)
        return Item(Encoded(store.encoded(record), (height, width)), label, where)

    def reopen(self) -> None:
        self.view.close()

    def close(self) -> None:
        self.view.close()

    def identity(self) -> str:
        """Its records and labels in order (what `data prepare --seed` or another store changes)."""
        if self._identity is None:
            digest = identity_digest(self.view.records.tobytes() + self.view.labels.tobytes())
            self._identity = f"view of {len(self)} records, {digest}"
        return self._identity


def view_mean(path: str | os.PathLike[str], advance: Callable[[int], None] | None = None,
              every: int = 1024) -> np.ndarray:
    """compute_image_mean over the view in its order (float32 1 x C x H x W); `advance(n)` is
    told of the images summed, `every` at a time."""
    view = View(path)

    def images() -> Iterator[tuple[np.ndarray, str]]:
        for i in range(len(view)):
            if advance and i and i % every == 0:
                advance(every)
            yield view.image(i), f"{view.path}[{i}]"

    try:
        mean = mean_of(images(), len(view))
        if advance:
            advance(len(view) - (len(view) - 1) // every * every)
        return mean
    finally:
        view.close()


def list_name(store: Store, record: int) -> str:
    """The record's name in its set's Caffe list (`n01440764/n01440764_10026.JPEG`)."""
    return store.name(record).split("/", 1)[1]


def _export_identity(view: View) -> dict:
    """What an export is made from: the view's records and labels in order, and its store."""
    rows = (view.path / RECORDS_FILE).read_bytes()
    return {"view": str(view.path.resolve()), "records": hashlib.sha256(rows).hexdigest(),
            "store": view.store.meta["fingerprint"]}


def export_lmdb(path: str | os.PathLike[str], out: str | os.PathLike[str], show_progress: bool = True) -> int:
    """Write the view as an ordinary Caffe LMDB: keys `%08d_<list name>` in the view's order
    (convert_imageset's keys for the list in that order), raw or encoded Datums with the view's
    labels.  Resumes an export of the same view that was stopped (`<out>.partial`); refuses to
    start when the disk lacks the space, or when `out` is anything but an LMDB folder or is, holds
    or lies inside the view or its store (`check_lmdb_out`).  Returns the number of records."""
    view = View(path)
    progress = None
    try:
        check_lmdb_out(out, (("view", view.path), ("store", view.store.path)))
        lengths = view.store.index["length"][view.records]
        writer = LmdbWriter(out, resume=_export_identity(view))
        start = writer.count
        try:
            require_space(writer.partial, lmdb_bytes(lengths[start:], 8 + 1 + 40),
                          f"the LMDB of {len(view) - start:,} records")
        except ReplicateError:
            writer.stop() if start else writer.abort()
            raise
        try:
            progress = Progress(len(view) - start, f"exporting {view.path} to {out}") if show_progress else None
            for i in range(start, len(view)):
                record, label = int(view.records[i]), int(view.labels[i])
                if view.store.format == "raw":
                    datum = array_datum(np.ascontiguousarray(view.store.raw(record)), label)
                else:
                    datum = encoded_datum(view.store.encoded(record), label)
                writer.put(make_key(i, list_name(view.store, record)), datum)
                if progress:
                    progress.update()
            writer.commit()
        except BaseException as err:
            writer.stop()
            if isinstance(err, KeyboardInterrupt):
                raise ReplicateError(f"{getattr(err, 'name', 'SIGINT')}: stopped after {writer.count:,} of "
                                     f"{len(view):,} records, kept in {writer.partial}: run the same command "
                                     "again to resume") from None
            if disk_full(err):
                raise ReplicateError(f"{writer.partial}: {err}; {writer.count:,} of {len(view):,} records kept: "
                                     "free space and run the same command again to resume") from None
            raise
        return len(view)
    finally:
        if progress:
            progress.close()
        view.close()
