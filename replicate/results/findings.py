"""The paper's claims as a few lines for a terminal: what `results`, and so the demo, ends with.

report.md holds each claim's rule, the nets it rests on and every number.  On screen a reader
needs the verdicts: each claim, the paper's value, ours with its one-sided 95% bounds, and
whether it holds, short enough to read without scrolling.
"""

from __future__ import annotations

from collections.abc import Sequence

from replicate.results.shape import Estimate, ShapeCheck

_HEADER = ("claim", "paper", "ours (95% bounds)", "holds")


def _short(claim: str) -> str:
    """The claim without its parenthetical: "AnB falls with n (features become specific)" ->
    "AnB falls with n"."""
    return claim.split(" (", 1)[0]


def _number(value: float, signed: bool) -> str:
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ours(e: Estimate | None) -> str:
    if e is None:
        return "not run"
    signed = e.value < 0 or (e.low is not None and e.low < 0)
    if not e.bounded:
        return f"{_number(e.value, signed)} ({'one net' if e.nets == '1' else 'no spread'})"
    assert e.low is not None and e.high is not None
    return f"{_number(e.value, signed)} [{_number(e.low, signed)}, {_number(e.high, signed)}]"


def _paper(c: ShapeCheck) -> str:
    if c.estimate is None:
        return "–"
    e = c.estimate
    text = _number(e.value, e.value < 0 or (e.low is not None and e.low < 0))
    return text if c.holds else f"{text} (no)"


def _verdict(c: ShapeCheck) -> str:
    return "–" if c.holds is None else ("yes" if c.holds else "no")


def claims_table(ours: Sequence[ShapeCheck], paper: Sequence[ShapeCheck]) -> list[str]:
    """The lines of the table, `ours` and `paper` being `shape_checks` of the two score sets
    (the same claims in the same order), and a last line counting the claims that hold."""
    rows = [_HEADER] + [(_short(o.claim), _paper(p), _ours(o.estimate), _verdict(o))
                        for o, p in zip(ours, paper, strict=True)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = ["The paper's claims on these runs, each net relative to its own base "
             "(the rules: report.md):"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    held = sum(1 for c in ours if c.holds)
    judged = sum(1 for c in ours if c.holds is not None)
    paper_held = sum(1 for c in paper if c.holds)
    lines.append(f"{held} of the paper's {len(ours)} claims hold on these runs"
                 + (f" ({len(ours) - judged} not judged: their nets were not run)" if judged < len(ours) else "")
                 + f"; on the paper's own nets, {paper_held} of {len(paper)}.")
    return lines
