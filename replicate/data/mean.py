"""Caffe's compute_image_mean: the per-pixel mean of an LMDB's records.

Caffe accumulates into the float32 `data` of a BlobProto, one record after another in key order
(`sum[i] = sum[i] + pixel`, rounded to float32 at every step), then divides each sum by the count
in float32.  For ImageNet-sized sets the float32 sums lose low bits; we reproduce that rounding
rather than a more exact double sum, so the mean file is the one the authors' nets subtracted.
Encoded records are decoded natively (grey stays grey, alpha is kept), as its DecodeDatumNative does.  Every
record must have the first record's size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from replicate.data.lmdb_io import LmdbReader, datum_array
from replicate.data.progress import Progress
from replicate.errors import ReplicateError


def mean_of(images: Iterator[tuple[np.ndarray, str]], count: int) -> np.ndarray:
    """The mean of `count` CHW images, given with their names for errors, summed in float32 one
    after another as compute_image_mean does; float32 1 x C x H x W."""
    total: np.ndarray | None = None
    for image, where in images:
        if total is None:
            total = np.zeros(image.shape, dtype=np.float32)
        elif image.shape != total.shape:
            raise ReplicateError(
                f"{where}: record is {'x'.join(map(str, image.shape))}, the first was "
                f"{'x'.join(map(str, total.shape))}; a mean needs equally sized images"
            )
        np.add(total, image, out=total, casting="unsafe")  # uint8 -> float32 is exact
    if total is None:
        raise ReplicateError("a mean of no images")
    return (total / np.float32(count))[None]


def compute_mean(path: str | os.PathLike[str], show_progress: bool = False) -> np.ndarray:
    """The mean image of the LMDB at `path`, float32 1 x C x H x W."""
    reader = LmdbReader(path)
    progress = Progress(len(reader), f"mean of {path}") if show_progress else None

    def images() -> Iterator[tuple[np.ndarray, str]]:
        for index in range(len(reader)):
            where = reader.where(index)
            yield datum_array(reader.datum(index), where), where
            if progress:
                progress.update()

    try:
        return mean_of(images(), len(reader))
    finally:
        reader.close()
        if progress:
            progress.close()
