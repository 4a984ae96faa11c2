"""Image list -> LMDB of Datum records, as Caffe's convert_imageset builds it.

Each list line `<path> <label>` becomes one record with key `%08d_<path>` (its line number, so the
LMDB iterates in list order; a skipped image leaves a gap in the numbers, as in Caffe).  The image
is read in colour (BGR) or grey, resized to exactly H x W with OpenCV-style bilinear interpolation
(aspect ratio not kept, Caffe's `--resize_height/--resize_width`), and stored raw (uint8 CHW) or,
with `encoded`, as a JPEG: the original file's bytes when it is a .jpg/.jpeg and no resize is asked for,
otherwise re-encoded at quality 95 (OpenCV's default; Caffe would use the file's own format).

Images are decoded by worker processes (replicate.data.workers: a signal stops the conversion with
one line, not a traceback from every worker, and cannot hang it); records are written in list
order into `<out>.partial`, which is renamed to `<out>` only when every line has been processed.
An image that cannot be read is reported and skipped (Caffe skips it silently), or stops the
conversion when `strict`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from replicate.data.image import decode_image, encode_jpeg, resize_linear
from replicate.data.lmdb_io import LmdbWriter, array_datum, check_lmdb_out, encoded_datum, make_key
from replicate.data.progress import Progress
from replicate.data.workers import Workers
from replicate.errors import ReplicateError


@dataclass(frozen=True)
class ConvertOptions:
    root: str
    resize: tuple[int, int] | None = (256, 256)
    encoded: bool = False
    color: bool = True


@dataclass
class ConvertReport:
    written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _record(job: tuple[int, str, int, ConvertOptions]) -> tuple[int, bytes | None, str]:
    """(line, serialized Datum or None, reason); runs in a pool worker."""
    index, name, label, opts = job
    path = os.path.join(opts.root, name)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        image = decode_image(raw, opts.color, name=path)
    except OSError as err:
        return index, None, f"cannot read ({err.strerror})"
    except ReplicateError as err:
        return index, None, str(err).removeprefix(f"{path}: ")
    if opts.resize is not None:
        image = resize_linear(image, *opts.resize)
    if opts.encoded:
        is_jpeg = Path(name).suffix.lower() in (".jpg", ".jpeg")
        data = raw if is_jpeg and opts.resize is None else encode_jpeg(image)
        datum = encoded_datum(data, label)
    else:
        datum = array_datum(np.ascontiguousarray(image.transpose(2, 0, 1)), label)
    return index, datum.SerializeToString(), ""


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
    entries: list[tuple[str, int]],
    out: str | os.PathLike[str],
    options: ConvertOptions,
    workers: int = 1,
    strict: bool = False,
    show_progress: bool = True,
) -> ConvertReport:
    """Convert `entries` (path, label) into the LMDB `out`; see the module docstring."""
    check_lmdb_out(out, (("image root", options.root),))  # before a worker starts
    report = ConvertReport()
    jobs = [(i, name, label, options) for i, (name, label) in enumerate(entries)]
    progress = Progress(len(jobs), f"converting into {out}") if show_progress else None
    pool = Workers(workers) if workers > 1 else None
    try:
        results = pool.ordered(_record, jobs, depth=8) if pool else map(_record, jobs)
        with LmdbWriter(out) as writer:
            for index, value, reason in results:
                name = entries[index][0]
                if value is None:
                    if strict:
                        raise ReplicateError(f"{os.path.join(options.root, name)}: {reason} (--strict)")
                    report.failed.append((os.path.join(options.root, name), reason))
                else:
                    writer.put_bytes(make_key(index, name), value)
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
