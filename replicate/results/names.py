"""What a network's name says: family, split, n and the paper's treatment label.

The authors' directory names are the only record of what each of their 148 logs is, and our
generator reuses them, so one parser serves both.  Families and splits are spelled exactly as in
results/paper_reference.csv (`split` is "" for nets on all 1000 classes, the zero-padded image
count for the reduced-data nets); `treatment` is the label of the paper's figures (baseB, BnB,
BnB+, AnB, AnB+), which pools AnA with BnB and BnA with AnB as the paper's footnote 3 does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from replicate.errors import ReplicateError

RANDOM_SPLITS = ("0", "1", "2", "3")
#: Figure 2's treatments, in the paper's drawing order.
FIG2_TREATMENTS = ("baseB", "BnB", "BnB+", "AnB", "AnB+")

_BASE = re.compile(r"half(?P<split>[0-3]|natman)(?P<target>[AB])")
_TRANSFER = re.compile(
    r"transfer(?P<ft>-ft)?(?:(?P<s1>[0-3])(?P<src>[AB])(?P<s2>[0-3])(?P<dst>[AB])"
    r"|natman(?P<nsrc>[AB])(?P<ndst>[AB]))_1_(?P<n>[1-7])")
_RANDOM = re.compile(r"nolearn_1_(?P<n>[1-7])")
_REDUCED = re.compile(r"reduced-(?P<k>\d{4})")


@dataclass(frozen=True)
class NetName:
    """One parsed name.  `target` is the dataset the net is trained and validated on
    (`half0B`, `whole`, `reduced0050`), `source` the base net whose layers it copies."""

    name: str
    family: str
    split: str
    n: int
    treatment: str
    target: str
    source: str | None = None

    @property
    def random_split(self) -> bool:
        """A net of the paper's similar-task experiment (random A/B splits 0-3)."""
        return self.split in RANDOM_SPLITS


def parse_name(name: str) -> NetName:
    """Parse one of the authors' (or our generator's) net names; unknown names raise."""
    if m := _BASE.fullmatch(name):
        return NetName(name, "base", m["split"], 0, "baseB", name)
    if m := _TRANSFER.fullmatch(name):
        ft = "_ft" if m["ft"] else ""
        plus = "+" if m["ft"] else ""
        n = int(m["n"])
        if m["nsrc"]:
            split, src, dst = "natman", m["nsrc"], m["ndst"]
        else:
            if m["s1"] != m["s2"]:
                raise ReplicateError(f"net name {name!r} copies layers across splits "
                                     f"{m['s1']} and {m['s2']}, which no treatment does")
            split, src, dst = m["s1"], m["src"], m["dst"]
        kind = "selffer" if src == dst else "transfer"
        family = f"natman_{kind}{ft}" if split == "natman" else f"{kind}{ft}"
        treatment = ("BnB" if src == dst else "AnB") + plus
        return NetName(name, family, split, n, treatment, f"half{split}{dst}", f"half{split}{src}")
    if m := _RANDOM.fullmatch(name):
        return NetName(name, "random_frozen", "", int(m["n"]), "random", "whole")
    if name == "netbase":
        return NetName(name, "whole", "", 0, "whole", "whole")
    if m := _REDUCED.fullmatch(name):
        k = m["k"]
        return NetName(name, "reduced", k, 0, "reduced", "whole" if k == "1300" else f"reduced{k}")
    raise ReplicateError(
        f"net name {name!r} is none of the paper's: half{{s}}{{A|B}}, "
        "transfer[-ft]{s}{X}{s}{Y}_1_{n}, transfer[-ft]natman{XY}_1_{n}, nolearn_1_{n}, "
        "netbase, reduced-{kkkk}")


def try_parse_name(name: str) -> NetName | None:
    """`parse_name`, or None for a name outside the paper's scheme (a renamed or extra run)."""
    try:
        return parse_name(name)
    except ReplicateError:
        return None
