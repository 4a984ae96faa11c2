"""Where a data layer's records come from: an LMDB (Data) or an image list (ImageData), and the
`Source` protocol they and a view (replicate.data.view.ViewSource) answer.

A source maps a position of the run's stream to a record and reads it; the loaders
(replicate.data.loader) make batches of what it reads.  No torch here: a source is read in
worker processes and by the data commands."""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from replicate.data.image import read_image, resize_linear
from replicate.data.item import Encoded, Item, identity_digest
from replicate.data.lmdb_io import LmdbReader, datum_array


class Source(Protocol):
    def __len__(self) -> int: ...
    def index(self, position: int, seed: int) -> int: ...
    def item(self, index: int) -> Item: ...
    def reopen(self) -> None: ...
    def close(self) -> None: ...
    def identity(self) -> str:
        """What its records are, in order, as a short text with a digest: a snapshot records it and
        a resume compares it, so that a source whose records or their order changed since is
        refused rather than read (the run would go on with other batches than the one it
        continues)."""
        ...


class LmdbSource:
    """The records of an LMDB in key order; position p is record p mod N."""

    def __init__(self, path: str | os.PathLike[str]):
        self.reader = LmdbReader(path)

    def __len__(self) -> int:
        return len(self.reader)

    def index(self, position: int, seed: int) -> int:
        return position % len(self.reader)

    def item(self, index: int) -> Item:
        datum = self.reader.datum(index)
        where = self.reader.where(index)
        payload = Encoded(datum.data) if datum.encoded else datum_array(datum, where)
        return Item(payload, int(datum.label), where)

    def reopen(self) -> None:
        """Drop the LMDB handles (a forked worker must not use its parent's)."""
        self.reader.close()

    def identity(self) -> str:
        """Its keys, which fix the records and their order (the values are not read: 1.28M of them)."""
        return f"LMDB of {len(self)} records, keys {self.reader.keys_digest()}"

    def close(self) -> None:
        """Release the LMDB environment (a later read opens it again)."""
        self.reader.close()


class ImageListSource:
    """ImageData's images: `root_folder + path` (Caffe concatenates the strings) for each list
    line, decoded, and resized to new_height x new_width when those are set.  With `shuffle`, each
    pass over the list (epoch) uses its own permutation drawn from (seed, epoch), as Caffe
    reshuffles at every wrap-around."""

    def __init__(
        self,
        entries: list[tuple[str, int]],
        root_folder: str,
        new_height: int,
        new_width: int,
        is_color: bool,
        shuffle: bool,
    ):
        self.entries = entries
        self.root_folder = root_folder
        self.size = (new_height, new_width)
        self.is_color = is_color
        self.shuffle = shuffle
        self._order: tuple[int, int, np.ndarray] | None = None
        self._identity: str | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def index(self, position: int, seed: int) -> int:
        epoch, offset = divmod(position, len(self.entries))
        if not self.shuffle:
            return offset
        if self._order is None or self._order[:2] != (seed, epoch):
            order = np.random.default_rng([seed & 0xFFFFFFFF, 1, epoch]).permutation(len(self.entries))
            self._order = (seed, epoch, order)
        return int(self._order[2][offset])

    def item(self, index: int) -> Item:
        name, label = self.entries[index]
        path = self.root_folder + name
        image = read_image(path, self.is_color)
        if self.size[0] > 0:
            image = resize_linear(image, *self.size)
        return Item(image.transpose(2, 0, 1), label, path)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass

    def identity(self) -> str:
        """Its list: the images, their labels and their order (the root may move)."""
        if self._identity is None:
            text = "\n".join(f"{name} {label}" for name, label in self.entries)
            digest = identity_digest(text.encode())
            self._identity = f"list of {len(self)} images{', shuffled' if self.shuffle else ''}, {digest}"
        return self._identity
