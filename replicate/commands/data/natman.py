"""Derive the natural/man-made class families from WordNet 3.0 (the paper's halfnatman rule).

Man-made = every class under artifact.n.01 (n00021939) along hypernym and instance-hypernym
links of WordNet's data.noun, plus the authors' 29 extra classes; natural = the rest.  Without
--out, compares the derivation with the family file shipped in the package and prints the counts
(for ILSVRC2012: 522 + 29 = 551 man-made, 449 natural).  WordNet 3.0's data.noun comes with
Debian's `wordnet-base` package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replicate.data.families import (
    ILSVRC12_NATMAN,
    ILSVRC12_WNIDS,
    MAN_MADE,
    format_families,
    natman_families,
    read_families,
)
from replicate.data.splits import read_synsets
from replicate.data.wordnet import DEFAULT_DATA_NOUN, MANMADE_EXTRAS, is_artifact, read_data_noun
from replicate.errors import ReplicateError
from replicate.io.binary import write_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-noun", type=Path, default=DEFAULT_DATA_NOUN,
                        help="WordNet 3.0 data.noun (default: %(default)s)")
    parser.add_argument("--synsets", type=Path, default=ILSVRC12_WNIDS,
                        help="class wnids, one a line, sorted (default: ILSVRC2012's 1000)")
    parser.add_argument("--out", type=Path,
                        help="write the families file here (default: compare with the shipped one)")


def run(args: argparse.Namespace) -> int:
    wnids = read_synsets(args.synsets)
    nouns = read_data_noun(args.data_noun)
    families = natman_families(wnids, nouns)
    artifacts = sum(is_artifact(w, nouns) for w in wnids)
    extras = sum(w in families and not is_artifact(w, nouns) for w in MANMADE_EXTRAS)
    man_made = sum(f == MAN_MADE for f in families.values())
    counts = (f"{artifacts} under artifact.n.01 + {extras} extra = {man_made} man-made, "
              f"{len(wnids) - man_made} natural")
    if args.out is None:
        shipped = read_families(ILSVRC12_NATMAN)
        differ = sorted(w for w in set(shipped) | set(families) if shipped.get(w) != families.get(w))
        if differ:
            raise ReplicateError(
                f"{ILSVRC12_NATMAN}: {len(differ)} classes differ from WordNet's derivation "
                f"({', '.join(differ[:5])}{', ...' if len(differ) > 5 else ''})"
            )
        print(f"{counts}; matches {ILSVRC12_NATMAN}")
        return 0
    notes = {w: nouns[w].lemma + (" (extra)" if w in MANMADE_EXTRAS else "") for w in wnids}
    header = [
        f"Families of the {len(wnids)} classes of {args.synsets.name} for the halfnatman split.",
        "man-made = under WordNet 3.0 artifact.n.01 (n00021939) along @ and @i links, or one",
        "of the authors' extra classes (marked); natural = the rest.",
        f"{counts}.",
        "Written by `python -m replicate data natman`; format: <wnid> natural|man-made  # lemma",
    ]
    write_atomic(args.out, format_families(families, notes, header).encode())
    print(f"{counts}; wrote {args.out}")
    return 0
