"""Class families: which classes are "natural" and which "man-made".

The paper's `halfnatman` split puts the natural classes in A and the man-made ones in B.  A
families file names the family of every class, one class a line in sorted wnid order:

    # comment lines start with '#'
    n01440764 natural    # tench
    n02666196 man-made   # abacus

(`<wnid> <family>`, family `natural` or `man-made`, an optional `# note` after them.)  The file
for ILSVRC2012 ships with the package (`natman_classes.txt`, derived from WordNet 3.0 by
`python -m replicate data natman`); `data synth` writes one for its generated classes.  The
ILSVRC2012 class list itself ships as `ilsvrc12_wnids.txt` (Caffe's `synsets.txt`: the 1000
wnids in sorted order; copied from timm's `timm/data/_info/imagenet_synsets.txt`, Apache-2.0).
"""

from __future__ import annotations

from pathlib import Path

from replicate.data.wordnet import MANMADE_EXTRAS, Noun, is_artifact
from replicate.errors import ReplicateError

NATURAL = "natural"
MAN_MADE = "man-made"
FAMILIES = (NATURAL, MAN_MADE)

ILSVRC12_WNIDS = Path(__file__).with_name("ilsvrc12_wnids.txt")
ILSVRC12_NATMAN = Path(__file__).with_name("natman_classes.txt")


def read_families(path: Path) -> dict[str, str]:
    """Read a families file into {wnid: family}, in file order."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ReplicateError(f"{path}: cannot read families file ({err.strerror})") from None
    families: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in FAMILIES:
            raise ReplicateError(
                f"{path}:{number}: expected '<wnid> natural|man-made', got {line.strip()!r}"
            )
        if fields[0] in families:
            raise ReplicateError(f"{path}:{number}: class {fields[0]} listed twice")
        families[fields[0]] = fields[1]
    return families


def format_families(families: dict[str, str], notes: dict[str, str], header: list[str]) -> str:
    """The text of a families file: header comment lines, then `wnid family  # note` lines."""
    lines = [f"# {line}".rstrip() for line in header]
    for wnid, family in families.items():
        note = notes.get(wnid)
        lines.append(f"{wnid} {family:<8}  # {note}" if note else f"{wnid} {family}")
    return "\n".join(lines) + "\n"


def natman_families(wnids: list[str], nouns: dict[str, Noun]) -> dict[str, str]:
    """The paper's rule: man-made = under artifact.n.01 in WordNet, or one of the 29 extras."""
    extras = set(MANMADE_EXTRAS)
    return {w: MAN_MADE if w in extras or is_artifact(w, nouns) else NATURAL for w in wnids}
