"""The paper's figures, each drawn for our runs beside the paper's own numbers.

Every figure has a left column with the paper's nets (from results/paper_reference.csv) and a
right column with ours, on shared y axes.  A row that none of our runs belongs in is left
out, and a figure without any other row is not written: the report says which and why, where an
empty panel would leave the reader to guess.  With `relative=True` (a scaled demo, whose absolute
accuracies mean nothing next to ImageNet's) both columns show each net relative to its base, so
what is compared is the shape: where transfer hurts, where fine-tuning helps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from replicate.results.groups import (Scores, base_mean, by_treatment, parsed,  # noqa: E402
                                      transfer_gaps)
from replicate.results.logs import ValPoint  # noqa: E402
from replicate.results.names import FIG2_TREATMENTS, try_parse_name  # noqa: E402
from replicate.results.stats import scored_points  # noqa: E402

# Figure 2's markers: white circles (baseB), dark/light blue dots (BnB/BnB+), dark/light red
# diamonds (AnB/AnB+), shifted left/right for clarity as in the paper.
STYLE = {"baseB": ("white", "o", 0.0), "BnB": ("#1a3d8f", "o", -0.15),
         "BnB+": ("#7fb2f0", "o", -0.05), "AnB": ("#8b1a1a", "D", 0.05),
         "AnB+": ("#f08080", "D", 0.15)}
PAPER_TITLE = "Paper (Yosinski et al. 2014)"
OURS_TITLE = "This replication"
Curves = Mapping[str, Sequence[ValPoint]]
T = TypeVar("T", Scores, Curves)
Panel = Callable[[Axes, T, bool], bool]


@dataclass(frozen=True)
class Figure:
    """A figure as drawn: its file (None when none of our runs belongs in any of its rows, so none
    is written) and the titles of the rows left out for want of our runs."""

    path: Path | None
    left_out: tuple[str, ...] = ()


def _empty(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no runs of these treatments", ha="center", va="center",
            transform=ax.transAxes, color="grey")


def _has_runs(panel: Panel, scores: T, relative: bool) -> bool:
    """Whether `panel` draws anything for `scores` (drawn once on a scratch figure)."""
    fig, ax = plt.subplots()
    try:
        return panel(ax, scores, relative)
    finally:
        plt.close(fig)


def _fig2_points(ax: Axes, scores: Scores, relative: bool) -> bool:
    groups = by_treatment(scores)
    base = base_mean(scores)
    if not groups or (relative and not base):
        return False
    scale = base if relative else 1.0
    for treatment in FIG2_TREATMENTS:
        color, marker, shift = STYLE[treatment]
        xs, ys = [], []
        for (t, n), nets in groups.items():
            if t == treatment:
                xs += [n + shift] * len(nets)
                ys += [v / scale for _, v in nets]
        if xs:
            ax.scatter(xs, ys, c=color, marker=marker, edgecolors="black", linewidths=0.6,
                       s=30, label=treatment, zorder=3)
    return True


def _fig2_means(ax: Axes, scores: Scores, relative: bool) -> bool:
    groups = by_treatment(scores)
    base = base_mean(scores)
    if not groups or base is None or (relative and not base):
        return False
    scale = base if relative else 1.0
    ax.axhline(base / scale, color="black", linestyle=":", label="baseB")
    for treatment in FIG2_TREATMENTS[1:]:
        color, marker, _ = STYLE[treatment]
        ns = sorted(n for t, n in groups if t == treatment)
        if ns:
            ys = [fmean(v for _, v in groups[(treatment, n)]) / scale for n in ns]
            ax.plot([0] + ns, [1.0 if relative else base] + ys, color=color, marker=marker,
                    markeredgecolor="black", label=treatment)
    return True


def _natman(ax: Axes, scores: Scores, relative: bool) -> bool:
    drew = False
    # Original files: A = natural (449 classes), B = man-made (551).
    for target, label, color in (("A", "man-made -> natural", "#d9822b"),
                                 ("B", "natural -> man-made", "#8c510a")):
        base = scores.get(f"halfnatman{target}")
        src = "B" if target == "A" else "A"
        pts = [(p.n, v) for p, v in parsed(scores)
               if p.family == "natman_transfer" and p.target == f"halfnatman{target}"]
        if not pts or (relative and not base):
            continue  # no transfer into this half (the demo runs one direction): no line, no legend entry
        if base is not None:
            pts.append((0, base))
        pts.sort()
        scale = base if relative else 1.0
        ax.plot([n for n, _ in pts], [v / scale for _, v in pts], color=color, marker="h",
                markersize=8, markeredgecolor="black",
                label=f"{label} (transfernatman{src}{target}; n=0: base)")
        drew = True
    return drew


def _random(ax: Axes, scores: Scores, relative: bool) -> bool:
    base = scores.get("netbase")
    pts = sorted((p.n, v) for p, v in parsed(scores) if p.family == "random_frozen")
    if base is not None:
        pts.insert(0, (0, base))
    if not pts or (relative and not base):
        return False
    scale = base if relative else 1.0
    ax.plot([n for n, _ in pts], [v / scale for _, v in pts], color="#555555", marker="o",
            markeredgecolor="black", label="random frozen layers 1..n (n=0: netbase)")
    return True


def _gaps(ax: Axes, scores: Scores, relative: bool) -> bool:
    drew = False
    for key, label, color, marker in (("similar", "AnB, random splits", "#8b1a1a", "D"),
                                      ("dissimilar", "AnB, man-made/natural", "#d9822b", "h"),
                                      ("random", "random filters", "#555555", "o")):
        series = transfer_gaps(scores, relative)[key]
        if not series:
            continue
        ns = sorted(series)
        for n in ns:
            ax.scatter([n] * len(series[n]), series[n], c=color, marker=marker, s=18,
                       edgecolors="black", linewidths=0.4, zorder=3)
        ax.plot([0] + ns, [0.0] + [fmean(series[n]) for n in ns], color=color, label=label)
        drew = True
    ax.axhline(0.0, color="black", linestyle=":")
    return drew


def _reduced(ax: Axes, scores: Scores, relative: bool) -> bool:
    pts = sorted((int(p.split), v) for p, v in parsed(scores) if p.family == "reduced")
    if not pts:
        return False
    scale = pts[-1][1] if relative else 1.0
    if relative and not scale:
        return False
    ax.plot([k for k, _ in pts], [v / scale for _, v in pts], color="#2b6cb0", marker="o",
            markeredgecolor="black", label="1000 classes, k images per class")
    ax.set_xscale("log")
    return True


def _draw(path: Path, title: str, rows: list[tuple[Panel, str, str]], paper: T, ours: T,
          relative: bool) -> Figure:
    """The rows that some run of `ours` belongs in, the paper's panel beside ours; no file at
    `path` (an earlier one removed) when there is none."""
    kept = [row for row in rows if _has_runs(row[0], ours, relative)]
    left_out = tuple(row_title for _, row_title, _ in rows if all(row_title != k[1] for k in kept))
    if not kept:
        path.unlink(missing_ok=True)
        return Figure(None, left_out)
    rows = kept
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.6 * len(rows)), sharey="row",
                             squeeze=False)
    for r, (panel, row_title, ylabel) in enumerate(rows):
        for c, (scores, who) in enumerate(((paper, PAPER_TITLE), (ours, OURS_TITLE))):
            ax = axes[r][c]
            if panel(ax, scores, relative):
                ax.legend(fontsize=7, loc="best")
            else:  # the paper's side only: ours has runs in every row kept
                _empty(ax)
            ax.set_title(f"{who}: {row_title}", fontsize=9)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel(ylabel, fontsize=8)
    fig.suptitle(title + ("  [relative to base: shapes, not absolute numbers]"
                          if relative else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(path, left_out)


def _layers_axis(panel: Panel) -> Panel:
    def wrapped(ax: Axes, scores: Scores, relative: bool) -> bool:
        ax.set_xlabel("layer n at which the network is chopped and retrained", fontsize=8)
        ax.set_xticks(range(8))
        return panel(ax, scores, relative)
    return wrapped


def figure2(paper: Scores, ours: Scores, path: str | Path, relative: bool = False) -> Figure:
    """Figure 2: every net (top) and treatment means (bottom), random A/B splits."""
    ylabel = "top-1 / baseB" if relative else "top-1 accuracy (best10)"
    return _draw(Path(path), "Figure 2: transfer between random halves of the classes",
                 [(_layers_axis(_fig2_points), "every net", ylabel),
                  (_layers_axis(_fig2_means), "treatment means", ylabel)], paper, ours, relative)


def figure3(paper: Scores, ours: Scores, path: str | Path, relative: bool = False) -> Figure:
    """Figure 3: man-made/natural transfer, random frozen layers, and both minus their base."""
    y = "top-1 / own base" if relative else "top-1 accuracy (best10)"
    gap = "top-1 / own base - 1" if relative else "top-1 minus own base"
    return _draw(Path(path), "Figure 3: performance degradation vs. layer",
                 [(_layers_axis(_natman), "man-made/natural transfer (AnB)", y),
                  (_layers_axis(_random), "random, untrained layers 1..n", y),
                  (_layers_axis(_gaps), "normalized by base", gap)], paper, ours, relative)


def figure_reduced(paper: Scores, ours: Scores, path: str | Path, relative: bool = False) -> Figure:
    """Top-1 accuracy against training images per class (the reduced-data nets)."""
    def panel(ax: Axes, scores: Scores, rel: bool) -> bool:
        ax.set_xlabel("training images per class", fontsize=8)
        return _reduced(ax, scores, rel)
    return _draw(Path(path), "Reduced data: 1000 classes, first k images of each",
                 [(panel, "reduced-data nets", "top-1 / largest k" if relative else
                   "top-1 accuracy (best10)")], paper, ours, relative)


def _curves_of(treatment: str) -> Panel:
    def panel(ax: Axes, curves: Curves, relative: bool) -> bool:
        ax.set_xlabel("fraction of the run" if relative else "iteration", fontsize=8)
        chosen = []
        for name, points in sorted(curves.items()):
            parsed_name = try_parse_name(name)
            used = scored_points(points)
            if parsed_name and parsed_name.random_split and parsed_name.treatment == treatment \
                    and used:
                chosen.append((name, used))
        for i, (name, used) in enumerate(chosen):
            xs = [p.iter for p in used]
            ys = [p.top1 for p in used]
            if relative:
                best = max(ys)
                xs = [x / xs[-1] for x in xs]
                ys = [y / best for y in ys] if best else ys
            # name every line while a legend can hold them, else one entry for the lot
            label = name if len(chosen) <= 10 else (
                f"{len(chosen)} {treatment} nets" if i == 0 else "_nolegend_")
            ax.plot(xs, ys, linewidth=0.8, label=label)
        return bool(chosen)
    return panel


def figure_curves(paper: Curves, ours: Curves, path: str | Path, relative: bool = False) -> Figure:
    """Validation curves of the base nets and of the fine-tuned transfers (AnB+)."""
    y = "top-1 / the net's highest" if relative else "validation top-1"
    return _draw(Path(path), "Validation curves, random A/B splits",
                 [(_curves_of("baseB"), "base nets", y), (_curves_of("AnB+"), "AnB+ nets", y)],
                 paper, ours, relative)
