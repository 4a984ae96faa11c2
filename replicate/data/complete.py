"""Every image accounted for: each class's count against what it must be, before a store is done.

What each class must hold (`Expected`) comes from the devkit for ILSVRC2012's own files (meta.mat's
`num_train_images` per training class; the validation ground truth per class) and from the list
itself for Caffe's lists (a line, an image).  `data prepare` compares twice: the images listed,
before anything is decoded (a cut class tar is found in seconds, not after hours of decoding), and
the records decoded, before the store is renamed complete (an image that could not be read or
decoded is missing too).  A class whose count differs is a `Gap`: an error naming the class, both
counts and why (the tar member where it was cut, the images that failed), unless the user accepts
that class by name; accepted gaps are written into the store's `store.json` and into the
`view.json` of every set holding the class.  For ILSVRC2012's 1,000 classes the devkit's totals
must be ILSVRC2012's: 1,281,167 training and 50,000 validation images.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass

import numpy as np

from replicate.data.families import ILSVRC12_WNIDS
from replicate.errors import ReplicateError

#: ILSVRC2012's images per part, as its devkit counts them.
ILSVRC2012_TOTALS = {"train": 1_281_167, "val": 50_000}
#: Gaps named in full in an error; the rest are counted.
SHOWN = 10


@dataclass(frozen=True)
class Gap:
    """A class of a part whose images are not all there."""

    part: str
    wnid: str
    label: int
    expected: int
    found: int
    why: str

    def text(self) -> str:
        why = f": {self.why}" if self.why else ""
        return f"{self.part} class {self.label} ({self.wnid}) has {self.found:,} images, {self.expected:,} expected{why}"

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Expected:
    """Per part ("train", "val"): how many images each class must hold, and what says so."""

    classes: list[str]
    counts: dict[str, np.ndarray]
    source: dict[str, str]

    @staticmethod
    def listed(parts: list[tuple[str, np.ndarray]], classes: list[str]) -> Expected:
        """What the lists themselves say: each of their images must be there."""
        return Expected(classes, {p: np.bincount(labels, minlength=len(classes)) for p, labels in parts},
                        {p: "the list" for p, _ in parts})

    def gaps(self, part: str, labels: np.ndarray, why: dict[int, str]) -> list[Gap]:
        """The classes of `part` whose images (`labels`, one per image there) are not as expected;
        `why`: label -> what explains a gap (a cut tar, the images that failed)."""
        expected = self.counts[part]
        found = np.bincount(labels, minlength=len(expected))
        return [Gap(part, self.classes[label], label, int(expected[label]), int(found[label]), why.get(label, ""))
                for label in np.flatnonzero(found != expected).tolist()]


def check_devkit_total(classes: list[str], part: str, counts: np.ndarray, where: str) -> None:
    """For ILSVRC2012's own classes, the devkit's counts must add up to ILSVRC2012's totals."""
    total = int(counts.sum())
    if classes == ILSVRC12_WNIDS.read_text().split() and total != ILSVRC2012_TOTALS[part]:
        raise ReplicateError(f"{where}: {total:,} {part} images in all, ILSVRC2012 has {ILSVRC2012_TOTALS[part]:,}: "
                             "is this ILSVRC2012's devkit?")


def refuse_unaccepted(gaps: list[Gap], accepted: Collection[str], state: str) -> list[Gap]:
    """The gaps whose class is accepted; an error for the others, naming them and `state` (what
    was kept, how to resume)."""
    refused = [g for g in gaps if g.wnid not in accepted]
    if not refused:
        return gaps
    wnids = sorted({g.wnid for g in refused})
    others = "".join(f"; {g.part} {g.wnid}: {g.found:,} of {g.expected:,}" for g in refused[1:SHOWN])
    more = f"; {len(refused) - SHOWN} more" if len(refused) > SHOWN else ""
    raise ReplicateError(f"{refused[0].text()}{others}{more}. {state}; to go on without these images, "
                         f"accept them by class: --accept-gap {','.join(wnids)}")
