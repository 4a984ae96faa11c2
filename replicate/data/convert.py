"""Image list -> LMDB of Datum records, as Caffe's convert_imageset builds it.

Each list line `<path> <label>` becomes one record with key `%08d_<path>` (its line number, so the
LMDB iterates in list order; a skipped image or a blank line leaves a gap in the numbers, as in
Caffe).  The image is read in colour (BGR) or grey, resized to exactly H x W with OpenCV's bilinear
interpolation (aspect ratio not kept, Caffe's `--resize_height/--resize_width`), and stored raw
(uint8 CHW) or encoded.  Encoded as convert_imageset encodes: in `encode_type`, or else in each
file's own format (its extension); the file's own bytes when no resize is asked for and its
extension names that format (jpg and jpeg alike), otherwise `cv::imencode` of the decoded image
(OpenCV's defaults: JPEG quality 95).  `check_size` stops at a raw record whose size is not the
first one's, as `--check_size` does.

Images are decoded by worker processes (replicate.data.workers: a signal stops the conversion with
one line, not a traceback from every worker, and cannot hang it); records are written in list
order into `<out>.partial`, which is renamed to `<out>` only when every line has been processed.
An image that cannot be read is reported and skipped (Caffe skips it silently), or stops the
conversion when `strict`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from replicate.data.image import decode_image, encode_image, resize_linear
from replicate.data.lmdb_io import LmdbWriter, array_datum, check_lmdb_out, encoded_datum, make_key
from replicate.data.progress import Progress
from replicate.data.workers import Workers
from replicate.errors import ReplicateError


@dataclass(frozen=True)
class ConvertOptions:
    root: str
    resize: tuple[int, int] | None = (256, 256)
    encoded: bool = False
    #: One format for every encoded record ("png", "jpg", ...); "" encodes each in its file's own.
    encode_type: str = ""
    color: bool = True
    check_size: bool = False

    @property
    def encodes(self) -> bool:
        """Records are stored encoded: asked for, or implied by a format (as convert_imageset)."""
        return self.encoded or bool(self.encode_type)


@dataclass
class ConvertReport:
    written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _extension(name: str) -> str:
    """What convert_imageset takes for a file's format: the text after its last '.', lower-cased."""
    return name.rpartition(".")[2].lower() if "." in name else ""


def _is_format(name: str, encoding: str) -> bool:
    """Caffe's matchExt: the file's extension names `encoding` (a .jpeg file is a jpg)."""
    ext = _extension(name)
    return ext == encoding or (encoding == "jpg" and ext == "jpeg")


def encoding_of(name: str, options: ConvertOptions) -> str:
    """The format an image's record is stored in; "" for a raw record."""
    if options.encode_type:
        return options.encode_type.lower()
    return _extension(name) if options.encoded else ""


def check_encodings(names: Sequence[str], options: ConvertOptions) -> None:
    """Refuse, before any image is read, a format OpenCV cannot write or a name with none
    (convert_imageset aborts on the first such image, with the records before it written)."""
    if options.check_size and options.encodes:
        raise ReplicateError("--check-size compares the sizes of raw records; convert_imageset "
                             "aborts at the second encoded one (it compares an encoded record's "
                             "byte count with 0): leave out one of the two")
    if not options.encodes:
        return
    first_name_of: dict[str, str] = {}
    for name in names:
        first_name_of.setdefault(encoding_of(name, options), name)
    for encoding, name in first_name_of.items():
        if encoding and "/" not in encoding and cv2.haveImageWriter(f"x.{encoding}"):
            continue
        if options.encode_type:
            raise ReplicateError(f"--encode-type {options.encode_type}: OpenCV {cv2.__version__} has no "
                                 "encoder for it (jpg, png, bmp, ...)")
        what = f"format '{encoding}'" if encoding else "no extension"
        raise ReplicateError(f"{name}: {what}, which OpenCV {cv2.__version__} cannot encode; "
                             "give --encode-type (jpg, png, ...)")


def _record(job: tuple[int, str, int, ConvertOptions]) -> tuple[int, bytes | None, str, tuple[int, ...]]:
    """(line, serialized Datum or None, reason, raw record's C x H x W); runs in a pool worker."""
    index, name, label, opts = job
    path = os.path.join(opts.root, name)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        image = decode_image(raw, opts.color, name=path)
    except OSError as err:
        return index, None, f"cannot read ({err.strerror})", ()
    except ReplicateError as err:
        return index, None, str(err).removeprefix(f"{path}: "), ()
    if opts.resize is not None:
        image = resize_linear(image, *opts.resize)
    encoding = encoding_of(name, opts)
    if encoding:
        keep = opts.resize is None and _is_format(name, encoding)
        datum = encoded_datum(raw if keep else encode_image(image, encoding), label)
        return index, datum.SerializeToString(), "", ()
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    return index, array_datum(chw, label).SerializeToString(), "", chw.shape


def shuffled(entries: list[tuple[str, int]], seed: int) -> list[tuple[str, int]]:
    """The list in a seeded random order, as `convert_imageset --shuffle` writes it.

    Caffe's Data layer reads an LMDB front to back without shuffling, so a class-sorted list
    (ImageNet's train.txt is one) must be shuffled when converted, or every batch holds one
    class and the net cannot learn.  Caffe's own order (boost's RNG) cannot be reproduced; this
    one is fixed by `seed`.
    """
    order = np.random.RandomState(seed).permutation(len(entries))
    return [entries[i] for i in order]


def convert(
    entries: Sequence[tuple[str, int] | None],
    out: str | os.PathLike[str],
    options: ConvertOptions,
    workers: int = 1,
    strict: bool = False,
    show_progress: bool = True,
) -> ConvertReport:
    """Convert `entries` (path, label; None for a blank line, whose number is skipped) into the
    LMDB `out`; see the module docstring."""
    check_lmdb_out(out, (("image root", options.root),))  # before a worker starts
    jobs = [(i, entry[0], entry[1], options) for i, entry in enumerate(entries) if entry is not None]
    check_encodings([name for _, name, _, _ in jobs], options)
    report = ConvertReport()
    first_shape: tuple[int, ...] | None = None
    progress = Progress(len(jobs), f"converting into {out}") if show_progress else None
    pool = Workers(workers) if workers > 1 else None
    try:
        results = pool.ordered(_record, jobs, depth=8) if pool else map(_record, jobs)
        with LmdbWriter(out) as writer:
            for index, value, reason, shape in results:
                path = os.path.join(options.root, entries[index][0])
                if value is None:
                    if strict:
                        raise ReplicateError(f"{path}: {reason} (--strict)")
                    report.failed.append((path, reason))
                else:
                    if options.check_size:
                        first_shape = first_shape or shape
                        if shape != first_shape:
                            raise ReplicateError(
                                f"{path}: record is {'x'.join(map(str, shape))}, the first was "
                                f"{'x'.join(map(str, first_shape))} (--check-size); nothing written")
                    writer.put_bytes(make_key(index, entries[index][0]), value)
                    report.written += 1
                if progress:
                    progress.update()
            if report.written == 0:
                raise ReplicateError(f"{out}: no image of the list could be read; nothing written")
    finally:
        if pool:
            pool.close()  # kill and reap the workers: none outlives the conversion
        if progress:
            progress.close()
    return report
