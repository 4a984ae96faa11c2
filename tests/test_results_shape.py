"""The paper's qualitative claims: all hold on the authors' own numbers, and each can fail."""

from __future__ import annotations

from replicate.results.reference import load_reference
from replicate.results.shape import shape_checks


def _paper() -> dict[str, float]:
    return {name: net.best10_top1 for name, net in load_reference().items()}


def test_every_claim_holds_on_the_authors_nets() -> None:
    checks = shape_checks(_paper())
    assert len(checks) == 6
    assert all(c.holds for c in checks), [(c.claim, c.value) for c in checks if not c.holds]


def test_an_under_trained_base_is_flagged() -> None:
    scores = _paper()
    for name in scores:
        if name.startswith("half") and not name.startswith("halfnatman"):
            scores[name] *= 0.6
    first = shape_checks(scores)[0]
    assert first.holds is False and first.value > 1.5


def test_a_flat_anb_fails_the_specificity_claim_and_missing_nets_give_no_verdict() -> None:
    scores = _paper()
    for name in list(scores):
        if name.startswith("transfer") and "natman" not in name and "-ft" not in name:
            scores[name] = scores["half0B"]
    by_claim = {c.claim.split(" (")[0]: c for c in shape_checks(scores)}
    assert by_claim["AnB falls with n"].holds is False
    del scores["netbase"]
    collapse = [c for c in shape_checks(scores) if c.claim.startswith("random frozen")][0]
    assert collapse.holds is None and collapse.value is None
