"""WordNet data.noun parsing, the natural/man-made rule, and the shipped ILSVRC2012 family file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from replicate.cli import main
from replicate.data.families import (
    ILSVRC12_NATMAN,
    ILSVRC12_WNIDS,
    MAN_MADE,
    NATURAL,
    format_families,
    natman_families,
    read_families,
)
from replicate.data.splits import read_synsets
from replicate.data.wordnet import (
    DEFAULT_DATA_NOUN,
    MANMADE_EXTRAS,
    ancestors,
    is_artifact,
    parse_data_noun,
    read_data_noun,
)
from replicate.errors import ReplicateError

# A hand-written data.noun: the licence header, hexadecimal word counts (0a = 10 words), links of
# every kind.  Only @ (hypernym) and @i (instance hypernym) lead upwards; ~ (hyponym), %p (part
# meronym) and links to other parts of speech must be ignored.
FIXTURE = """\
  1 This software and database is being provided to you, the LICENSEE, by  
  2 Princeton University under the following license.  
00001740 03 n 01 entity 0 002 ~ 00021939 n 0000 ~ 00000400 n 0000 | that which exists  
00021939 03 n 02 artifact 0 artefact 0 003 @ 00001740 n 0000 + 02986741 a 0202 ~ 00000100 n 0000 | man-made  
00000100 06 n 01 hammer 0 002 @ 00021939 n 0000 + 01234567 v 0101 | a tool  
00000200 06 n 01 claw_hammer 0 001 @ 00000100 n 0000 | two links down  
00000300 15 n 0a a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 001 @i 00000200 n 0000 | an instance  
00000400 05 n 01 dog 0 002 @ 00001740 n 0000 %p 00021939 n 0000 | part-of link only  
00000500 05 n 01 puppy 0 001 @ 00000400 n 0000 | natural, two links down  
00000600 13 n 01 bagel 0 001 @ 00000500 n 0000 | natural in WordNet, man-made by hand  
"""


@pytest.fixture
def nouns() -> dict:
    return parse_data_noun(FIXTURE.splitlines(), "fixture")


def test_parser_reads_lemmas_and_only_upward_links(nouns: dict) -> None:
    assert set(nouns) == {f"n{o}" for o in
                          ("00001740", "00021939", "00000100", "00000200", "00000300", "00000400",
                           "00000500", "00000600")}
    assert nouns["n00000200"].lemma == "claw hammer"
    assert nouns["n00021939"].parents == ("n00001740",)
    assert nouns["n00000100"].parents == ("n00021939",)  # the verb link is not a parent
    assert nouns["n00000300"].parents == ("n00000200",)  # found after 10 words (hex count)
    assert nouns["n00000400"].parents == ("n00001740",)  # %p is not a parent


def test_artifact_membership_follows_hypernym_and_instance_links(nouns: dict) -> None:
    assert ancestors("n00000300", nouns) == {"n00000300", "n00000200", "n00000100", "n00021939",
                                             "n00001740"}
    assert [is_artifact(w, nouns) for w in ("n00000100", "n00000200", "n00000300")] == [True] * 3
    assert [is_artifact(w, nouns) for w in ("n00000400", "n00000500", "n00001740")] == [False] * 3


def test_natman_rule_adds_the_hand_listed_classes(nouns: dict) -> None:
    extra = "n00000600"
    families = natman_families(["n00000300", "n00000500", extra], nouns)
    assert families == {"n00000300": MAN_MADE, "n00000500": NATURAL, extra: NATURAL}
    bagel = dict(nouns)
    bagel[MANMADE_EXTRAS[11]] = bagel.pop(extra)  # n07693725, bagel, is one of the 29
    assert natman_families([MANMADE_EXTRAS[11]], bagel) == {MANMADE_EXTRAS[11]: MAN_MADE}


def test_bad_data_noun_lines_name_file_and_line(tmp_path: Path) -> None:
    bad = FIXTURE + "00000700 05 n 01 cat 0 003 @ 00001740 n 0000 | says 3 links, has 1\n"
    path = tmp_path / "data.noun"
    path.write_text(bad)
    with pytest.raises(ReplicateError, match=r"data.noun:11: not a WordNet"):
        read_data_noun(path)
    with pytest.raises(ReplicateError, match="n09999999 is not a noun synset"):
        ancestors("n09999999", parse_data_noun(FIXTURE.splitlines(), "fixture"))


def test_shipped_wnids_are_ilsvrc2012() -> None:
    wnids = read_synsets(ILSVRC12_WNIDS)
    assert len(wnids) == 1000 and wnids == sorted(set(wnids))
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    # Caffe's synsets.txt byte for byte (one wnid a line); the halfnatman md5s pin the order too.
    assert hashlib.md5(ILSVRC12_WNIDS.read_bytes()).hexdigest() == "5ef135d00f8768c0f62853cd9dbc563d"


def test_shipped_families_count_551_man_made_449_natural() -> None:
    families = read_families(ILSVRC12_NATMAN)
    assert list(families) == read_synsets(ILSVRC12_WNIDS)
    assert sum(f == MAN_MADE for f in families.values()) == 551
    assert sum(f == NATURAL for f in families.values()) == 449
    assert len(set(MANMADE_EXTRAS)) == 29
    assert all(families[w] == MAN_MADE for w in MANMADE_EXTRAS)


def test_families_file_round_trip_and_errors(tmp_path: Path) -> None:
    families = {"s0000000": NATURAL, "s0000001": MAN_MADE}
    path = tmp_path / "families.txt"
    path.write_text(format_families(families, {"s0000000": "blobs"}, ["two classes"]))
    assert path.read_text() == "# two classes\ns0000000 natural   # blobs\ns0000001 man-made\n"
    assert read_families(path) == families
    path.write_text("s0000000 natural\ns0000001 manmade\n")
    with pytest.raises(ReplicateError, match=r"families.txt:2: expected"):
        read_families(path)
    path.write_text("s0000000 natural\ns0000000 man-made\n")
    with pytest.raises(ReplicateError, match=r"families.txt:2: class s0000000 listed twice"):
        read_families(path)


@pytest.mark.skipif(not DEFAULT_DATA_NOUN.exists(), reason="WordNet 3.0 (wordnet-base) not installed")
def test_shipped_families_rederive_from_wordnet(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    nouns = read_data_noun(DEFAULT_DATA_NOUN)
    wnids = read_synsets(ILSVRC12_WNIDS)
    assert sum(is_artifact(w, nouns) for w in wnids) == 522
    assert not any(is_artifact(w, nouns) for w in MANMADE_EXTRAS)
    assert natman_families(wnids, nouns) == read_families(ILSVRC12_NATMAN)
    assert main(["data", "natman"]) == 0
    assert "522 under artifact.n.01 + 29 extra = 551 man-made, 449 natural; matches" in capsys.readouterr().out
    out = tmp_path / "natman.txt"
    assert main(["data", "natman", "--out", str(out)]) == 0
    assert out.read_bytes() == ILSVRC12_NATMAN.read_bytes()
