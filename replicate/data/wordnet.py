"""WordNet 3.0's noun hierarchy, read from its `data.noun` database file.

The paper's man-made/natural split is defined through WordNet: a class is man-made when its synset
lies under `artifact.n.01` (offset 00021939) along hypernym (`@`) and instance-hypernym (`@i`)
links, plus 29 classes the authors added by hand (food, signs, ... that WordNet files elsewhere).
Reading `data.noun` ourselves (Debian's `wordnet-base` installs it at /usr/share/wordnet/data.noun)
lets anyone re-derive the shipped family file instead of trusting it.

A wnid is `n` + the 8-digit synset offset in `data.noun`, which is how ImageNet names its classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from replicate.errors import ReplicateError

DEFAULT_DATA_NOUN = Path("/usr/share/wordnet/data.noun")
ARTIFACT = "n00021939"
UP_LINKS = ("@", "@i")  # hypernym, instance hypernym

# Classes the authors counted as man-made although WordNet does not put them under artifact.n.01.
MANMADE_EXTRAS = (
    "n06794110",  # street sign
    "n06874185",  # traffic light
    "n07565083",  # menu
    "n07579787",  # plate
    "n07583066",  # guacamole
    "n07584110",  # consomme
    "n07590611",  # hot pot
    "n07613480",  # trifle
    "n07614500",  # ice cream
    "n07615774",  # ice lolly
    "n07684084",  # French loaf
    "n07693725",  # bagel
    "n07695742",  # pretzel
    "n07697313",  # cheeseburger
    "n07697537",  # hotdog
    "n07711569",  # mashed potato
    "n07831146",  # carbonara
    "n07836838",  # chocolate sauce
    "n07860988",  # dough
    "n07871810",  # meat loaf
    "n07873807",  # pizza
    "n07875152",  # potpie
    "n07880968",  # burrito
    "n07892512",  # red wine
    "n07920052",  # espresso
    "n07930864",  # cup
    "n07932039",  # eggnog
    "n09229709",  # bubble
    "n15075141",  # toilet tissue
)


@dataclass(frozen=True)
class Noun:
    """One noun synset: its first lemma (for people) and the wnids one `@`/`@i` link above it."""

    lemma: str
    parents: tuple[str, ...]


def parse_data_noun(lines: list[str], source: str) -> dict[str, Noun]:
    """Parse the lines of a WordNet `data.noun` file into {wnid: Noun}.

    Line format (wndb(5)): `offset lex_filenum ss_type w_cnt (word lex_id)*w_cnt p_cnt
    (symbol offset pos source/target)*p_cnt [frames] | gloss`; w_cnt is hexadecimal, p_cnt
    decimal.  Lines starting with two spaces are the licence header.
    """
    nouns: dict[str, Noun] = {}
    for number, line in enumerate(lines, 1):
        if line.startswith("  ") or not line.strip():
            continue
        fields = line.split(" | ", 1)[0].split()
        try:
            offset, words = fields[0], int(fields[3], 16)
            at = 4 + 2 * words
            lemma, pointers = fields[4], int(fields[at])
            parents = []
            for i in range(at + 1, at + 1 + 4 * pointers, 4):
                symbol, target, pos = fields[i], fields[i + 1], fields[i + 2]
                if symbol in UP_LINKS and pos == "n":
                    parents.append("n" + target)
        except (IndexError, ValueError):
            raise ReplicateError(f"{source}:{number}: not a WordNet data.noun synset line") from None
        nouns["n" + offset] = Noun(lemma.replace("_", " "), tuple(parents))
    return nouns


def read_data_noun(path: Path) -> dict[str, Noun]:
    """Read WordNet's `data.noun` (see `parse_data_noun`)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise ReplicateError(f"{path}: cannot read WordNet data.noun ({err.strerror})") from None
    return parse_data_noun(text.splitlines(), str(path))


def ancestors(wnid: str, nouns: dict[str, Noun]) -> set[str]:
    """Every synset above `wnid` (itself included) along hypernym and instance-hypernym links."""
    if wnid not in nouns:
        raise ReplicateError(f"{wnid} is not a noun synset of WordNet's data.noun")
    seen, todo = {wnid}, [wnid]
    while todo:
        for parent in nouns[todo.pop()].parents:
            if parent not in seen and parent in nouns:
                seen.add(parent)
                todo.append(parent)
    return seen


def is_artifact(wnid: str, nouns: dict[str, Noun]) -> bool:
    """True when `wnid` lies under artifact.n.01 (the WordNet part of the man-made rule)."""
    return ARTIFACT in ancestors(wnid, nouns)
