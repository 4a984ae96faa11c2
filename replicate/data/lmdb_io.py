"""LMDBs of Caffe `Datum` records, read and written as Caffe's tools and Data layer do.

Layout (Caffe's convert_imageset): key `%08d_<path>` with the line number of the image list, value
a serialized `Datum` holding either raw uint8 CHW pixels in BGR order (`data`, with channels,
height, width) or an encoded image file (`data` with `encoded: true`), and an int label.  LMDB
iterates keys in byte order, which the zero-padded line number makes list order.

Writers build `<out>.partial` and rename it to `<out>` when complete, so an interrupted conversion
never leaves something that looks like a finished LMDB; a resumable writer (`export-lmdb`) keeps
what it wrote there, with a note of what it was made from, for the next run to continue.  They
replace, at `<out>` or `<out>.partial`, only an LMDB folder (`data.mdb`, `lock.mdb`, that note):
anything else there is refused before a byte is written, as a user's work.  Readers open read-only
without a lock file, so the golden LMDBs in the repository and LMDBs on read-only shares work as
they are.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import lmdb
import numpy as np
from google.protobuf.message import DecodeError

from replicate.data.destination import refuse_blocked_parent, refuse_overlap
from replicate.data.image import decode_image
from replicate.data.item import identity_digest
from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2

#: The note a resumable writer keeps in its partial LMDB: what the records are made from.
PARTIAL_MARKER = "replicate_partial.json"
#: What an LMDB folder written by this project (or by Caffe's tools) holds; a writer replaces a
#: folder at its output (or its `.partial`) only when it holds nothing else.
LMDB_FILES = frozenset({"data.mdb", "lock.mdb", PARTIAL_MARKER})
#: Records per write transaction, as convert_imageset commits every 1000 images.
COMMIT_EVERY = 1000
#: The map size is only an upper bound on the file (LMDB files are sparse until written).
_MAP_SIZE = 1 << 40


def partial_path(out: str | os.PathLike[str]) -> Path:
    """Where an LMDB for `out` is built before it is renamed into place."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _not_an_lmdb(path: Path) -> str | None:
    """Why `path` is not a folder an LMDB writer may replace (None: it may, or nothing is there)."""
    if path.is_symlink():
        return "is a symbolic link, not an LMDB folder"
    if not path.exists():
        return None
    if not path.is_dir():
        return "is a file, not an LMDB folder"
    others = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(path)
                    if e.name not in LMDB_FILES or not e.is_file(follow_symlinks=False))
    if not others:
        return None
    shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    return f"holds {shown}, not only an LMDB's data.mdb and lock.mdb"


def check_lmdb_out(out: str | os.PathLike[str],
                   sources: tuple[tuple[str, str | os.PathLike[str]], ...] = ()) -> None:
    """Refuse, before anything is written or removed, an LMDB output whose replacement could
    destroy anything but an LMDB: a path that names no new folder (`.`, `..`), one that is, holds
    or lies inside a source being read (`(what, path)` pairs), a file or a folder of other things
    at `out` or `<out>.partial`, a parent path that runs through a file."""
    if Path(out).name in ("", ".."):
        raise ReplicateError(f"{out}: names no new folder for the LMDB; give one, e.g. {Path(out) / 'lmdb'}")
    partial = partial_path(out)
    refuse_overlap(out, sources, written=partial)
    for path in (Path(out), partial):
        why = _not_an_lmdb(path)
        if why:
            raise ReplicateError(f"{path}: {why}; nothing was written: remove it or give another output")
    refuse_blocked_parent(out)


def _remove_lmdb(path: Path) -> None:
    """Delete an LMDB folder, file by file: only the files `check_lmdb_out` allows, so a folder
    that came to hold anything else meanwhile is refused, not deleted."""
    why = _not_an_lmdb(path)
    if why:
        raise ReplicateError(f"{path}: {why}; the new LMDB is kept in {partial_path(path)}")
    for name in LMDB_FILES:
        (path / name).unlink(missing_ok=True)
    os.rmdir(path)


def make_key(index: int, name: str) -> bytes:
    """convert_imageset's key: the list line number, zero-padded to 8 digits, `_`, the path."""
    return f"{index:08d}_{name}".encode()


def array_datum(image: np.ndarray, label: int) -> caffe_pb2.Datum:
    """A raw Datum from a CHW uint8 array (channels in the order stored, BGR for colour), with
    `encoded: false` written out as Caffe's CVMatToDatum writes it: the record's bytes are
    convert_imageset's."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"a raw Datum holds CHW uint8 pixels, not {image.dtype} {image.shape}")
    c, h, w = image.shape
    return caffe_pb2.Datum(channels=c, height=h, width=w, data=image.tobytes(), label=int(label),
                           encoded=False)


def encoded_datum(data: bytes, label: int) -> caffe_pb2.Datum:
    """An encoded Datum (JPEG/PNG bytes), as convert_imageset --encoded writes it."""
    return caffe_pb2.Datum(data=data, label=int(label), encoded=True)


def parse_datum(value: bytes, where: str) -> caffe_pb2.Datum:
    """Parse one record; a corrupt one stops with ReplicateError naming `where` (db and key)."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except DecodeError as err:
        raise ReplicateError(f"{where}: corrupt Datum record ({err})") from None
    if not datum.encoded:
        size = datum.channels * datum.height * datum.width
        held = len(datum.data) or len(datum.float_data)
        if size <= 0 or held != size:
            raise ReplicateError(
                f"{where}: corrupt Datum record ({datum.channels}x{datum.height}x{datum.width} "
                f"needs {size} values, holds {held})"
            )
    return datum


def datum_array(
    datum: caffe_pb2.Datum, where: str, force_color: bool = False, force_gray: bool = False
) -> np.ndarray:
    """The pixels of a Datum as CHW: uint8 for `data`, float32 for `float_data`.

    Encoded records are decoded as Caffe's DataTransformer does: natively (grey stays grey)
    unless `force_color` (3 channels) or `force_gray` (1 channel) is set.
    """
    if datum.encoded:
        if force_color and force_gray:
            raise ReplicateError(f"{where}: force_color and force_gray cannot both be set")
        color = True if force_color else False if force_gray else None
        return decode_image(datum.data, color, name=where).transpose(2, 0, 1)
    shape = (datum.channels, datum.height, datum.width)
    if datum.data:
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    return np.asarray(datum.float_data, dtype=np.float32).reshape(shape)


#: Open read-only environments, shared: py-lmdb refuses to open one environment twice in a
#: process (a train and a test net often read the same LMDB).  Keyed by process id too: a forked
#: loader worker closes the copy it inherited (py-lmdb would refuse a second open, and LMDB handles
#: must not be used across fork) and opens its own.
_ENVS: dict[tuple[int, int, int], list] = {}

#: Held around every read this module makes through py-lmdb, and by every fork of this process
#: (os.register_at_fork), so that no thread is inside LMDB when the process forks.  A child forked
#: while another thread was reading (a GpuLoader's thread preparing batches while a pool forked its
#: workers) inherits LMDB mid-call, and closing the inherited environment, which a worker must do
#: before it opens its own, then waits forever: 40 children in 40 hung that way without this lock.
_LMDB_LOCK = threading.RLock()
os.register_at_fork(before=_LMDB_LOCK.acquire, after_in_parent=_LMDB_LOCK.release,
                    after_in_child=_LMDB_LOCK.release)


def _env_key(path: Path) -> tuple[int, int, int]:
    """(process, device, inode) of data.mdb: an LMDB rebuilt at the same path is another one."""
    st = os.stat(path / "data.mdb")
    return os.getpid(), st.st_dev, st.st_ino


def _open_env(path: Path) -> lmdb.Environment:
    with _LMDB_LOCK:
        return _open_env_locked(path)


def _open_env_locked(path: Path) -> lmdb.Environment:
    if not (path / "data.mdb").is_file():
        if path.exists():
            raise ReplicateError(f"{path}: not an LMDB (no data.mdb); LevelDB sources are not supported")
        raise ReplicateError(f"{path}: data source does not exist")
    key = _env_key(path)
    for inherited in [k for k in _ENVS if k[1:] == key[1:] and k[0] != key[0]]:
        _ENVS.pop(inherited)[0].close()
    if key not in _ENVS:
        try:
            env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, max_readers=512)
        except lmdb.Error as err:
            raise ReplicateError(f"{path}: cannot open LMDB ({err})") from None
        _ENVS[key] = [env, 0]
    _ENVS[key][1] += 1
    return _ENVS[key][0]


def _release_env(key: tuple[int, int, int]) -> None:
    with _LMDB_LOCK:
        entry = _ENVS.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                entry[0].close()
                del _ENVS[key]


class LmdbReader:
    """Random and sequential access to an LMDB of Datum records, in key order.

    Keys are listed once at opening (a compact index: one bytes buffer plus offsets, ~50 MB for
    ImageNet's 1.28M keys), so record i can be fetched directly; this is what lets several loader
    workers read their batches without replaying a cursor.  The reader is picklable (it reopens the
    environment in the receiving process), as loader workers need.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._env: lmdb.Environment | None = _open_env(self.path)
        self._pid, self._key = os.getpid(), _env_key(self.path)
        keys = []
        with _LMDB_LOCK, self._env.begin(buffers=False) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                keys.append(key)
        if not keys:
            raise ReplicateError(f"{self.path}: LMDB holds no records")
        self._keys = b"".join(keys)
        self._offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum([len(k) for k in keys], out=self._offsets[1:])
        self._txn: lmdb.Transaction | None = None
        self._digest: str | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_env"] = state["_txn"] = None
        return state

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def key(self, index: int) -> bytes:
        return self._keys[self._offsets[index] : self._offsets[index + 1]]

    def keys_digest(self) -> str:
        """A digest of every key in order (computed once): what fixes the records a position reads."""
        if self._digest is None:
            self._digest = identity_digest(self._offsets.tobytes() + self._keys)
        return self._digest

    def _transaction(self) -> lmdb.Transaction:
        if self._txn is None:
            if self._env is None:
                self._env = _open_env(self.path)
                self._pid, self._key = os.getpid(), _env_key(self.path)
            with _LMDB_LOCK:
                self._txn = self._env.begin(buffers=False)
        return self._txn

    def where(self, index: int) -> str:
        """`<db>[key]`, how errors name a record."""
        return f"{self.path}[{self.key(index).decode(errors='replace')}]"

    def datum(self, index: int) -> caffe_pb2.Datum:
        """Record `index` (0-based, key order), parsed."""
        txn = self._transaction()
        with _LMDB_LOCK:
            value = txn.get(self.key(index))
        if value is None:
            raise ReplicateError(f"{self.where(index)}: record vanished from the LMDB")
        return parse_datum(value, self.where(index))

    def close(self) -> None:
        """Release the LMDB (in a forked child, just forget the parent's handles)."""
        if self._env is not None and self._pid == os.getpid():
            if self._txn is not None:
                with _LMDB_LOCK:
                    self._txn.abort()
            _release_env(self._key)
        self._env = self._txn = None


class LmdbWriter:
    """Write Datum records into `<path>.partial`, then `commit()` renames it to `path`.

    Used as a context manager, leaving the block by an exception (or Ctrl-C) removes the partial
    LMDB; an existing `path` is replaced only at the final rename, and only if it is an LMDB
    folder (`check_lmdb_out`, also run first: anything else refuses the writer).  With `resume`
    (what the LMDB is made from, a JSON-able dict), a partial LMDB made from the same is continued
    instead: its committed records are kept (`count` of them), and `stop()` keeps what was written
    for the next run.  A full disk is raised as OSError(ENOSPC).
    """

    MARKER = PARTIAL_MARKER

    def __init__(self, path: str | os.PathLike[str], resume: dict | None = None):
        check_lmdb_out(path)
        self.path = Path(path)
        self.partial = partial_path(path)
        marker = self.partial / self.MARKER
        same = resume is not None and marker.is_file() and json.loads(marker.read_text()) == resume
        if self.partial.exists() and not same:
            _remove_lmdb(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        if resume is not None and not same:
            marker.write_text(json.dumps(resume))
        self._resumable = resume is not None
        self._env = lmdb.open(str(self.partial), map_size=_MAP_SIZE, subdir=True)
        self._txn = self._env.begin(write=True)
        self._pending = 0
        self._closed = False
        self.count = self._env.stat()["entries"]

    def put(self, key: bytes, datum: caffe_pb2.Datum) -> None:
        self.put_bytes(key, datum.SerializeToString())

    def put_bytes(self, key: bytes, value: bytes) -> None:
        """Store an already serialized Datum (conversion workers serialize in parallel)."""
        with _disk_errors():
            self._txn.put(key, value)
            self._pending += 1
            self.count += 1
            if self._pending >= COMMIT_EVERY:
                self._txn.commit()
                self._txn = self._env.begin(write=True)
                self._pending = 0

    def commit(self) -> Path:
        """Flush, close, and move the finished LMDB into place."""
        with _disk_errors():
            self._txn.commit()
            self._env.sync(True)
        self._env.close()
        self._closed = True
        if os.path.lexists(self.path):  # the earlier LMDB, kept until now
            _remove_lmdb(self.path)
        # The note goes last: a stop before the rename leaves a partial LMDB that a rerun of the
        # export finds complete and only renames, rather than writing it all again.
        os.replace(self.partial, self.path)
        (self.path / self.MARKER).unlink(missing_ok=True)
        return self.path

    def stop(self) -> None:
        """Keep the records written so far in the partial LMDB (resumable) and close it."""
        if self._closed:
            return
        try:
            self._txn.commit()
            self.count = self._env.stat()["entries"]
        except lmdb.Error:  # a full disk: the last committed records stay
            self._txn.abort()
            self.count = self._env.stat()["entries"]
        self._env.close()
        self._closed = True

    def abort(self) -> None:
        self._txn.abort()
        self._env.close()
        shutil.rmtree(self.partial, ignore_errors=True)

    def __enter__(self) -> LmdbWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        elif self._resumable:
            self.stop()
        else:
            self.abort()


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """py-lmdb's DiskError (ENOSPC) as the OSError every other writer raises."""
    try:
        yield
    except lmdb.DiskError as err:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(err)) from None


def lmdb_bytes(lengths: np.ndarray, key_length: int) -> int:
    """About what LMDB takes on disk for values of these `lengths` (serialized Datums: payload
    plus ~32 bytes): a value over half a page fills overflow pages of its own (a raw 3x256x256
    record 49 pages of 4096 bytes), smaller ones share leaf pages (counted half full)."""
    values = np.asarray(lengths, np.int64) + 32
    big = values > 2048
    pages = -(-(values[big] + 16) // 4096)
    return int(pages.sum() * 4096 + 2 * (values[~big] + key_length + 16).sum() + 2**20)


def write_lmdb(path: str | os.PathLike[str], records: list[tuple[str, caffe_pb2.Datum]]) -> Path:
    """Write `(name, datum)` records with keys `%08d_<name>` in list order; returns the path."""
    with LmdbWriter(path) as writer:
        for index, (name, datum) in enumerate(records):
            writer.put(make_key(index, name), datum)
    return writer.path
