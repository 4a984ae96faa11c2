"""One store of every image of the dataset, decoded and resized once; sets are views into it.

A store is a folder:

- `data.bin`: the records back to back.  Format `raw`: CHW uint8 pixels in BGR order (a raw
  Datum's `data`, so a record is read with no parsing: 196,608 bytes for 3x256x256); format `jpeg`:
  the resized image re-encoded as a JPEG (`quality`, default 90);
- `index.npy`: per record its byte offset and length, label (Caffe's, in the whole set), part
  (0 = train, 1 = val) and channels, height, width;
- `names.txt`: per record its name in Caffe's list (`n01440764/n01440764_10026.JPEG`);
- `failed.txt`: `<part>/<name>\t<reason>` for every image that could not be decoded (left out);
- `store.json`: the format and options, counts, and the fingerprint of the input.

Building (`build_store`) decodes each image once with Caffe's convert_imageset arithmetic (colour
BGR, OpenCV-exact bilinear resize, `replicate.data.image`) in a pool of processes and appends the
records in list order to `<store>.partial`; every few thousand records the data and the index are
flushed, so an interrupted build resumes where it stopped (the data file is cut back to the last
indexed record).  The folder is renamed to its final name only when complete.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from replicate.data.ilsvrc import Images, read_image_bytes
from replicate.data.image import decode_image, encode_jpeg, resize_linear
from replicate.data.progress import Progress
from replicate.errors import ReplicateError
from replicate.io.binary import write_atomic

FORMATS = ("raw", "jpeg")
PARTS = ("train", "val")
VERSION = 1
INDEX_DTYPE = np.dtype([("offset", "<i8"), ("length", "<i4"), ("label", "<i4"), ("part", "u1"),
                        ("channels", "u1"), ("height", "<u2"), ("width", "<u2")])
#: Images per task of a build worker, and records between two flushes of a build.
CHUNK = 64
FLUSH_EVERY = 4096


@dataclass(frozen=True)
class StoreOptions:
    """How records are made: `raw` pixels or `jpeg` at `quality`, resized to `resize` (H, W) or
    kept at their size (None), colour (BGR) or grey."""

    format: str = "raw"
    resize: tuple[int, int] | None = (256, 256)
    quality: int = 90
    color: bool = True

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ReplicateError(f"store format {self.format!r}: choose raw or jpeg")
        if not 1 <= self.quality <= 100:
            raise ReplicateError(f"JPEG quality {self.quality} outside 1..100")


@dataclass
class BuildReport:
    written: int
    failed: list[tuple[str, str]]
    resumed_at: int
    seconds: float


def encode_chunk(job: tuple[list[tuple[str, int, int, str]], StoreOptions]) -> list[tuple[bytes | None, tuple[int, ...], str]]:
    """Decode, resize and encode one chunk of images (in a pool worker): (record, CHW shape,
    why it failed) each."""
    items, options = job
    out = []
    for file, offset, size, name in items:
        try:
            image = decode_image(read_image_bytes(file, offset, size), options.color, name=name)
        except OSError as err:
            out.append((None, (), f"cannot read ({err.strerror or err})"))
            continue
        except ReplicateError as err:
            out.append((None, (), str(err).removeprefix(f"{name}: ")))
            continue
        if options.resize is not None:
            image = resize_linear(image, *options.resize)
        h, w, c = image.shape
        if options.format == "raw":
            record = np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes()
        else:
            record = encode_jpeg(image, options.quality)
        out.append((record, (c, h, w), ""))
    return out


def fingerprint(parts: list[tuple[str, Images]], options: StoreOptions) -> str:
    """What a store is built from: every image's part, name and label, and the options."""
    digest = hashlib.sha256(json.dumps(asdict(options), sort_keys=True).encode())
    for part, images in parts:
        digest.update(part.encode() + b"\0")
        digest.update("\n".join(images.names).encode())
        digest.update(images.labels.astype("<i8").tobytes())
    return digest.hexdigest()


class _Partial:
    """The files of a store being built, and how far they got."""

    def __init__(self, folder: Path, meta: dict):
        self.folder = folder
        build = folder / "build.json"
        if folder.exists():
            try:
                previous = json.loads(build.read_text())
            except (OSError, ValueError):
                previous = None
            if previous != meta:
                raise ReplicateError(
                    f"{folder}: an unfinished build from other images or options; remove it to start anew"
                )
        else:
            folder.mkdir(parents=True)
            for name in ("data.bin", "index.part", "failed.part"):
                (folder / name).touch()
            write_atomic(build, json.dumps(meta, indent=1).encode())
        rows = (folder / "index.part").stat().st_size // INDEX_DTYPE.itemsize
        self.index = open(folder / "index.part", "r+b")
        self.index.truncate(rows * INDEX_DTYPE.itemsize)
        self.index.seek(0, os.SEEK_END)
        last = np.fromfile(folder / "index.part", INDEX_DTYPE)[-1:] if rows else None
        self.end = int(last["offset"][0]) + max(0, int(last["length"][0])) if rows else 0
        self.data = open(folder / "data.bin", "r+b")
        self.data.truncate(self.end)
        self.data.seek(self.end)
        failed = (folder / "failed.part").read_text().splitlines()
        self.failed = [line.split("\t", 2) for line in failed if line and int(line.split("\t")[0]) < rows]
        self.done = rows

    def add(self, record: bytes | None, shape: tuple[int, ...], label: int, part: int, reason: str, name: str) -> None:
        row = np.zeros(1, INDEX_DTYPE)
        row["offset"], row["label"], row["part"] = self.end, label, part
        if record is None:
            row["length"] = -1
            self.failed.append([str(self.done), name, reason])
        else:
            self.data.write(record)
            row["length"] = len(record)
            row["channels"], row["height"], row["width"] = shape
            self.end += len(record)
        self.index.write(row.tobytes())
        self.done += 1

    def flush(self) -> None:
        """Data first, then the index that points into it (a crash may lose indexed work, never
        leave an index entry without its bytes)."""
        self.data.flush()
        os.fsync(self.data.fileno())
        write_atomic(self.folder / "failed.part", "".join(f"{i}\t{n}\t{r}\n" for i, n, r in self.failed).encode())
        self.index.flush()
        os.fsync(self.index.fileno())

    def close(self) -> None:
        self.data.close()
        self.index.close()


def _finish(partial: _Partial, out: Path, meta: dict, names: list[str]) -> None:
    """Drop the failed rows, write the final index, names and description, rename into place."""
    rows = np.fromfile(partial.folder / "index.part", INDEX_DTYPE)
    ok = rows["length"] >= 0
    np.save(partial.folder / "index.npy", rows[ok])
    kept = [name for name, good in zip(names, ok.tolist()) if good]
    write_atomic(partial.folder / "names.txt", "".join(f"{n}\n" for n in kept).encode())
    write_atomic(partial.folder / "failed.txt", "".join(f"{n}\t{r}\n" for _, n, r in partial.failed).encode())
    counts = {part: int(((rows["part"] == i) & ok).sum()) for i, part in enumerate(PARTS)}
    description = {**meta, "records": int(ok.sum()), "failed": len(partial.failed), "parts": counts,
                   "bytes": partial.end}
    write_atomic(partial.folder / "store.json", json.dumps(description, indent=1).encode())
    for name in ("index.part", "failed.part", "build.json"):
        (partial.folder / name).unlink()
    os.replace(partial.folder, out)


def build_store(
    out: Path,
    parts: list[tuple[str, Images]],
    options: StoreOptions,
    workers: int = 1,
    show_progress: bool = True,
) -> BuildReport:
    """Build (or finish building) the store `out` from the images of `parts` ("train"/"val")."""
    options.check()
    meta = {"version": VERSION, **asdict(options), "fingerprint": fingerprint(parts, options)}
    meta["resize"] = list(options.resize) if options.resize else None
    if (out / "store.json").is_file():
        done = json.loads((out / "store.json").read_text())
        if {k: done.get(k) for k in meta} != meta:
            raise ReplicateError(f"{out}: a store built from other images or options; remove it to rebuild")
        return BuildReport(done["records"], read_failed(out), done["records"] + done["failed"], 0.0)
    partial = _Partial(out.with_name(out.name + ".partial"), meta)
    names = [f"{part}/{n}" for part, images in parts for n in images.names]
    labels = np.concatenate([images.labels for _, images in parts])
    part_of = np.concatenate([np.full(len(images), PARTS.index(p), np.uint8) for p, images in parts])
    total = len(names)
    started = time.monotonic()
    resumed_at = partial.done
    progress = Progress(total - resumed_at, f"decoding into {out}") if show_progress else None
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        jobs = _jobs(parts, options, resumed_at)
        since_flush = 0
        for chunk in pool.imap(encode_chunk, jobs) if pool else map(encode_chunk, jobs):
            for record, shape, reason in chunk:
                i = partial.done
                partial.add(record, shape, int(labels[i]), int(part_of[i]), reason, names[i])
            since_flush += len(chunk)
            if since_flush >= FLUSH_EVERY:
                partial.flush()
                since_flush = 0
            if progress:
                progress.update(len(chunk))
        partial.flush()
    except KeyboardInterrupt:
        partial.flush()
        raise ReplicateError(
            f"interrupted after {partial.done} of {total} images; run the same command again to resume"
        ) from None
    finally:
        if pool:
            pool.terminate()
        if progress:
            progress.close()
        partial.close()
    if partial.done - len(partial.failed) == 0:
        raise ReplicateError(f"{out}: no image could be read; nothing written (see {partial.folder}/failed.part)")
    _finish(partial, out, meta, names)
    return BuildReport(total - len(partial.failed), [(n, r) for _, n, r in partial.failed], resumed_at,
                       time.monotonic() - started)


def _jobs(parts: list[tuple[str, Images]], options: StoreOptions, start: int) -> Iterator[tuple[list, StoreOptions]]:
    """The build's tasks from image `start` on: CHUNK images each, none spanning two parts."""
    first = 0
    for _, images in parts:
        for lo in range(max(start - first, 0), len(images), CHUNK):
            hi = min(lo + CHUNK, len(images))
            items = [(images.files[images.file_of[i]], int(images.offsets[i]), int(images.sizes[i]), images.names[i])
                     for i in range(lo, hi)]
            yield items, options
        first += len(images)


def read_failed(store: Path) -> list[tuple[str, str]]:
    lines = (store / "failed.txt").read_text().splitlines()
    return [tuple(line.split("\t", 1)) for line in lines if line]  # type: ignore[misc]


class Store:
    """A finished store, read-only: record payloads straight from the page cache (mmap).

    Picklable: a loader worker reopens the data file in its own process.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self.meta = json.loads((self.path / "store.json").read_text())
        except FileNotFoundError:
            partial = self.path.with_name(self.path.name + ".partial")
            hint = f" ({partial} is unfinished: run `data prepare` again to finish it)" if partial.exists() else ""
            raise ReplicateError(f"{self.path}: not a finished store{hint}") from None
        if self.meta.get("version") != VERSION:
            raise ReplicateError(f"{self.path}: store version {self.meta.get('version')}, expected {VERSION}")
        self.index = np.load(self.path / "index.npy", mmap_mode="r")
        self.format: str = self.meta["format"]
        self._map: mmap.mmap | None = None
        self._names: list[str] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None, "_names": None}

    def name(self, record: int) -> str:
        """The record's `<part>/<list name>`."""
        if self._names is None:
            self._names = (self.path / "names.txt").read_text().splitlines()
        return self._names[record]

    def __len__(self) -> int:
        return len(self.index)

    def _data(self) -> mmap.mmap:
        if self._map is None:
            with open(self.path / "data.bin", "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def shape(self, record: int) -> tuple[int, int, int]:
        row = self.index[record]
        return int(row["channels"]), int(row["height"]), int(row["width"])

    def raw(self, record: int) -> np.ndarray:
        """The CHW uint8 pixels of a raw record, a view of the mapped file (no copy)."""
        row = self.index[record]
        return np.frombuffer(self._data(), np.uint8, int(row["length"]), int(row["offset"])).reshape(self.shape(record))

    def encoded(self, record: int) -> bytes:
        """The JPEG bytes of a jpeg record."""
        row = self.index[record]
        offset = int(row["offset"])
        return self._data()[offset : offset + int(row["length"])]

    def records_of(self, part: str) -> dict[str, int]:
        """{list name: record} of one part ("train" or "val")."""
        self.name(0)
        prefix = f"{part}/"
        return {name[len(prefix):]: i for i, name in enumerate(self._names) if name.startswith(prefix)}

    def close(self) -> None:
        """Unmap the data file; arrays still viewing records keep their pages until they go."""
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # raw() views are alive: the map closes when the last one goes
                pass
            self._map = None
