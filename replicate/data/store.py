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

Building (`build_store`) decodes each image once as Caffe's convert_imageset did (OpenCV's
imdecode and INTER_LINEAR resize, `replicate.data.image`) in a pool of processes and appends the
records in list order to `<store>.partial`; every few thousand records the data and the index are
flushed, so a build stopped by Ctrl-C, SIGTERM, a full disk or a crash resumes where it stopped
(the data file is cut back to the last indexed record).  The folder is renamed to its final name
only when complete: when every class holds the images it must (`replicate.data.complete`; the
gaps accepted are listed in `store.json`).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from replicate.data.complete import Expected, Gap, refuse_unaccepted
from replicate.data.ilsvrc import Images, read_image_bytes
from replicate.data.image import decode_image, encode_jpeg, resize_linear
from replicate.data.progress import Progress
from replicate.data.signals import held_signals
from replicate.data.space import disk_full
from replicate.data.workers import Workers
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
    gaps: list[Gap] = field(default_factory=list)  # accepted


Chunk = tuple[int, list[tuple[bytes | None, tuple[int, ...], str]]]


def encode_chunk(job: tuple[int, list[tuple[str, int, int, str]], StoreOptions]) -> Chunk:
    """Decode, resize and encode one chunk of images (in a pool worker): the position of its
    first image, and (record, CHW shape, why it failed) of each."""
    start, items, options = job
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
    return start, out


def fingerprint(parts: list[tuple[str, Images]], options: StoreOptions) -> str:
    """What a store is built from: every image's part, name and label, and the options."""
    digest = hashlib.sha256(json.dumps(asdict(options), sort_keys=True).encode())
    for part, images in parts:
        digest.update(part.encode() + b"\0")
        digest.update("\n".join(images.names).encode())
        digest.update(images.labels.astype("<i8").tobytes())
    return digest.hexdigest()


def _sources(parts: list[tuple[str, Images]]) -> dict[str, str]:
    """Which files a build reads its images from: a digest of their paths, and the first."""
    files = [os.path.abspath(file) for _, images in parts for file in images.files]
    return {"digest": hashlib.sha256("\n".join(files).encode()).hexdigest(), "first": files[0] if files else ""}


#: The files of a store being built that a complete store does not keep.
_BUILD_FILES = ("index.part", "failed.part", "build.json")


class _Partial:
    """The files of a store being built, and how far they got.

    Index rows wait in memory until the data they point to is on disk (`flush`), so that no row
    can outlive its bytes, whatever stops the build (a signal, a full disk, a crash): on opening,
    rows whose bytes the data file lacks are dropped anyway, and the data file is cut back to the
    end of the last row kept.  The caller holds signals while it adds and flushes (see
    replicate.data.signals.held_signals)."""

    def __init__(self, folder: Path, meta: dict):
        self.folder = folder
        build = folder / "build.json"
        if folder.exists():
            try:
                previous = json.loads(build.read_text())
            except (OSError, ValueError):
                previous = None
            read = previous.get("sources", meta["sources"]) if isinstance(previous, dict) else None
            if isinstance(previous, dict) and {**previous, "sources": meta["sources"]} == meta and read != meta["sources"]:
                raise ReplicateError(
                    f"{folder}: an unfinished build that read the same images from other files (it read "
                    f"{read['first']}, this run would read {meta['sources']['first']}); its failures and "
                    "records are of those files: remove it to start anew, or give the paths it read")
            if previous is None or {**previous, "sources": meta["sources"]} != meta:
                raise ReplicateError(
                    f"{folder}: an unfinished build from other images or options; remove it to start anew"
                )
        else:
            folder.mkdir(parents=True)
            for name in ("data.bin", "index.part", "failed.part"):
                (folder / name).touch()
            write_atomic(build, json.dumps(meta, indent=1).encode())
        raw = (folder / "index.part").read_bytes()
        rows = np.frombuffer(raw[: len(raw) - len(raw) % INDEX_DTYPE.itemsize], INDEX_DTYPE)
        ends = rows["offset"] + np.maximum(rows["length"], 0)
        kept = int(np.searchsorted(ends, (folder / "data.bin").stat().st_size, side="right"))
        self.end = int(ends[kept - 1]) if kept else 0
        self.index = open(folder / "index.part", "r+b")
        self.index.truncate(kept * INDEX_DTYPE.itemsize)
        self.index.seek(0, os.SEEK_END)
        self.data = open(folder / "data.bin", "r+b")
        self.data.truncate(self.end)
        self.data.seek(self.end)
        failed = (folder / "failed.part").read_text().splitlines()
        self.failed = [line.split("\t", 2) for line in failed if line and int(line.split("\t")[0]) < kept]
        self.done = self.flushed = kept
        self._rows = bytearray()

    def add(self, chunk: Chunk, labels: np.ndarray, parts: np.ndarray, names: list[str]) -> bool:
        """Append a chunk's records if it is the next one (False otherwise)."""
        start, records = chunk
        if start != self.done:
            return False
        for record, shape, reason in records:
            i = self.done
            row = np.zeros(1, INDEX_DTYPE)
            row["offset"], row["label"], row["part"] = self.end, labels[i], parts[i]
            if record is None:
                row["length"] = -1
                self.failed.append([str(i), names[i], reason])
            else:
                self.data.write(record)
                row["length"] = len(record)
                row["channels"], row["height"], row["width"] = shape
                self.end += len(record)
            self._rows += row.tobytes()
            self.done += 1
        return True

    def flush(self) -> None:
        """Data first, then the failures, then the index rows that point into the data."""
        self.data.flush()
        os.fsync(self.data.fileno())
        write_atomic(self.folder / "failed.part", "".join(f"{i}\t{n}\t{r}\n" for i, n, r in self.failed).encode())
        self.index.write(self._rows)
        self.index.flush()
        os.fsync(self.index.fileno())
        self._rows.clear()
        self.flushed = self.done

    def close(self) -> None:
        """Close the files; what was not flushed is dropped (the next opening cuts it off)."""
        for f in (self.data, self.index):
            try:
                f.close()
            except OSError:  # a full disk refusing the buffered rest: it was never indexed
                pass


def _finish(partial: _Partial, out: Path, meta: dict, names: list[str], gaps: list[Gap]) -> None:
    """Drop the failed rows, write the final index, names and description, rename into place."""
    rows = np.fromfile(partial.folder / "index.part", INDEX_DTYPE)
    ok = rows["length"] >= 0
    np.save(partial.folder / "index.npy", rows[ok])
    kept = [name for name, good in zip(names, ok.tolist()) if good]
    write_atomic(partial.folder / "names.txt", "".join(f"{n}\n" for n in kept).encode())
    write_atomic(partial.folder / "failed.txt", "".join(f"{n}\t{r}\n" for _, n, r in partial.failed).encode())
    counts = {part: int(((rows["part"] == i) & ok).sum()) for i, part in enumerate(PARTS)}
    description = {**meta, "records": int(ok.sum()), "failed": len(partial.failed), "parts": counts,
                   "bytes": partial.end, "gaps": [g.as_json() for g in gaps]}
    write_atomic(partial.folder / "store.json", json.dumps(description, indent=1).encode())
    os.replace(partial.folder, out)  # complete from here on, whatever stops the build next
    _drop_build_files(out)


def _drop_build_files(folder: Path) -> None:
    """Remove what only a build in progress needs.  A complete store that still has them was
    stopped right after its rename: the next build of it (which finds it done) removes them."""
    for name in _BUILD_FILES:
        (folder / name).unlink(missing_ok=True)


def record_bytes(parts: list[tuple[str, Images]], options: StoreOptions, sample: int = 16) -> float:
    """Bytes of a record: exact for raw pixels of a fixed size; otherwise the mean of up to
    `sample` images spread over the lists, made as the build makes them, plus a quarter."""
    if options.format == "raw" and options.resize is not None:
        return (3 if options.color else 1) * options.resize[0] * options.resize[1]
    everything = [(images, i) for _, images in parts for i in range(len(images))]
    picked = [everything[k] for k in np.linspace(0, len(everything) - 1, min(sample, len(everything))).astype(int)]
    items = [(im.files[im.file_of[i]], int(im.offsets[i]), int(im.sizes[i]), im.names[i]) for im, i in picked]
    sizes = [len(record) for record, _, _ in encode_chunk((0, items, options))[1] if record is not None]
    return 1.25 * sum(sizes) / len(sizes) if sizes else 0.0


def bytes_needed(out: Path, parts: list[tuple[str, Images]], options: StoreOptions) -> int:
    """What building (or finishing) the store `out` will still write: the records left, and the
    index (twice: the growing one and the final one) and names."""
    if (out / "store.json").is_file():
        return 0
    index = out.with_name(out.name + ".partial") / "index.part"
    done = index.stat().st_size // INDEX_DTYPE.itemsize if index.is_file() else 0
    total = sum(len(images) for _, images in parts)
    names = sum(len(part) + len(name) + 2 for part, images in parts for name in images.names)
    return int(record_bytes(parts, options) * (total - done)) + 2 * INDEX_DTYPE.itemsize * total + names


def _stored_labels(folder: Path, part: int) -> np.ndarray:
    rows = np.fromfile(folder / "index.part", INDEX_DTYPE)
    return rows["label"][(rows["part"] == part) & (rows["length"] >= 0)].astype(np.int64)


def _why(images: Images, part: str, failed: list[list[str]], labels: np.ndarray) -> dict[int, str]:
    """Per class of a part: what the listing found wrong, and its images that failed."""
    why = {label: [text] for label, text in images.damage.items()}
    prefix = f"{part}/"
    for row, name, reason in failed:
        if name.startswith(prefix):
            why.setdefault(int(labels[int(row)]), []).append(f"{name.removeprefix(prefix)} failed ({reason})")
    return {label: "; ".join(texts[:3]) + (f"; {len(texts) - 3} more" if len(texts) > 3 else "")
            for label, texts in why.items()}


def build_store(
    out: Path,
    parts: list[tuple[str, Images]],
    options: StoreOptions,
    workers: int = 1,
    show_progress: bool = True,
    expected: Expected | None = None,
    accept: Collection[str] = (),
) -> BuildReport:
    """Build (or finish building) the store `out` from the images of `parts` ("train"/"val").

    Every class is counted against `expected` (default: the lists given, each image once) on the
    images listed, before anything is written, and on the records made, before the store is
    renamed complete; a gap whose class is not in `accept` stops the build with an error (see
    replicate.data.complete), the records made kept for a rerun.  Ctrl-C, SIGTERM (as
    KeyboardInterrupt, see replicate.data.signals) or a full disk stop it with one line that
    says how many images are kept; the same call resumes."""
    options.check()
    if expected is None:
        classes = [str(k) for k in range(1 + max(int(images.labels.max(initial=0)) for _, images in parts))]
        expected = Expected.listed([(part, images.labels) for part, images in parts], classes)
    listed = [gap for part, images in parts for gap in expected.gaps(part, images.labels, images.damage)]
    refuse_unaccepted(listed, accept, f"Nothing was written to {out}")
    meta = {"version": VERSION, **asdict(options), "fingerprint": fingerprint(parts, options)}
    meta["resize"] = list(options.resize) if options.resize else None
    if (out / "store.json").is_file():
        done = json.loads((out / "store.json").read_text())
        if {k: done.get(k) for k in meta} != meta:
            raise ReplicateError(f"{out}: a store built from other images or options; remove it to rebuild")
        gaps = refuse_unaccepted([Gap(**g) for g in done.get("gaps", [])], accept,
                                 f"{out} was completed with these gaps accepted")
        _drop_build_files(out)
        return BuildReport(done["records"], read_failed(out), done["records"] + done["failed"], 0.0, gaps)
    # The files read (tars, or image files under a root) only matter to a build in progress: a
    # complete store stays usable after the tars move.  Builds of older versions did not say.
    partial = _Partial(out.with_name(out.name + ".partial"), {**meta, "sources": _sources(parts)})
    names = [f"{part}/{n}" for part, images in parts for n in images.names]
    labels = np.concatenate([images.labels for _, images in parts])
    part_of = np.concatenate([np.full(len(images), PARTS.index(p), np.uint8) for p, images in parts])
    total = len(names)
    started = time.monotonic()
    resumed_at = partial.done
    progress = Progress(total - resumed_at, f"decoding into {out}") if show_progress else None
    pool = Workers(workers) if workers > 1 else None
    kept = f"they are kept in {partial.folder}: run the same command again to resume"

    def add(chunk: Chunk) -> None:
        with held_signals():  # a chunk's records and rows go in whole, or not at all
            if partial.add(chunk, labels, part_of, names) and progress:
                progress.update(len(chunk[1]))
            if partial.done - partial.flushed >= FLUSH_EVERY:
                partial.flush()

    try:
        jobs = _jobs(parts, options, resumed_at)
        results = pool.ordered(encode_chunk, jobs) if pool else map(encode_chunk, jobs)
        try:
            for chunk in results:
                add(chunk)
        except KeyboardInterrupt as stop:
            with held_signals():  # the chunks the workers finished go in too
                for chunk in results.ready() if pool else ():
                    partial.add(chunk, labels, part_of, names)
                partial.flush()
            raise ReplicateError(f"{getattr(stop, 'name', 'SIGINT')}: stopped after {partial.flushed:,} of {total:,} "
                                 f"images; {kept}") from None
        partial.flush()
        store_gaps = [gap for p, images in parts for gap in expected.gaps(
            p, _stored_labels(partial.folder, PARTS.index(p)), _why(images, p, partial.failed, labels))]
        unread = [name for _, name, reason in partial.failed if reason.startswith("cannot read")]
        hint = (f"; {len(unread):,} of the images could not be read at all (e.g. {unread[0]}): if their paths are "
                f"wrong (--train-root, --val-root), remove {partial.folder} and run again with the right ones"
                if unread else "")
        refuse_unaccepted(store_gaps, accept, f"The {partial.done - len(partial.failed):,} images made are kept in "
                                              f"{partial.folder} for a rerun{hint}")
        if partial.done - len(partial.failed) == 0:
            raise ReplicateError(f"{out}: no image could be read; nothing written (see {partial.folder}/failed.part)")
        _finish(partial, out, meta, names, store_gaps)
    except OSError as err:
        if not disk_full(err):
            raise
        raise ReplicateError(f"{partial.folder}: {err.strerror} after {partial.flushed:,} of {total:,} images; "
                             f"{kept}, once there is space") from None
    finally:
        if pool:
            pool.close()
        if progress:
            progress.close()
        partial.close()
    return BuildReport(total - len(partial.failed), [(n, r) for _, n, r in partial.failed], resumed_at,
                       time.monotonic() - started, store_gaps)


def _jobs(parts: list[tuple[str, Images]], options: StoreOptions, start: int) -> Iterator[tuple[int, list, StoreOptions]]:
    """The build's tasks from image `start` on: CHUNK images each, none spanning two parts."""
    first = 0
    for _, images in parts:
        for lo in range(max(start - first, 0), len(images), CHUNK):
            hi = min(lo + CHUNK, len(images))
            items = [(images.files[images.file_of[i]], int(images.offsets[i]), int(images.sizes[i]), images.names[i])
                     for i in range(lo, hi)]
            yield first + lo, items, options
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
