"""ILSVRC2012 as distributed -> one store, every set of the paper as a view, each set's mean.

Steps, each resumable (a rerun of the same command skips what is done):

1. the store (`<out>/store`, `replicate.data.store`): every training and validation image decoded
   and resized once, in parallel;
2. per set (`<out>/<set>`: whole, half{0..3}{A,B}, halfnatman{A,B}, each `_train` and `_valid`,
   and reduced<K>_train): the Caffe list and class map `data splits` writes (byte-identical to the
   authors' lists) and the view (`replicate.data.view`), rewritten only when it changed;
3. per training set whose view is new: its mean, in parallel over the sets.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from replicate.data.ilsvrc import Images
from replicate.data.progress import Progress
from replicate.data.splits import PAPER_REDUCED, PAPER_SPLITS, paper_sets, write_set
from replicate.data.store import BuildReport, Store, StoreOptions, build_store
from replicate.data.view import MEAN_FILE, View, view_mean, write_view
from replicate.io.binary import write_mean

STORE = "store"


@dataclass
class PrepareReport:
    store: BuildReport
    views: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # view -> list images the store lacks
    means: list[str] = field(default_factory=list)  # views whose mean was computed now


def _mean_job(path: str) -> tuple[str, np.ndarray]:
    return path, view_mean(path)


def prepare(
    out: Path,
    train: Images | None,
    val: Images | None,
    wnids: list[str],
    natural: np.ndarray,
    options: StoreOptions,
    splits: int = PAPER_SPLITS,
    reduced: tuple[int, ...] = PAPER_REDUCED,
    seed: int = 0,
    workers: int = 1,
    show_progress: bool = True,
) -> PrepareReport:
    """Build the store and the views of every set of the paper under `out` (see the module doc)."""
    parts = [(part, images) for part, images in (("train", train), ("val", val)) if images is not None]
    report = PrepareReport(build_store(out / STORE, parts, options, workers, show_progress))
    store = Store(out / STORE)
    records = {part: store.records_of(part) for part, _ in parts}
    lists = [images.image_list(part) if images is not None else None for part, images in (("train", train), ("val", val))]
    means = []
    for name, images, classes in paper_sets(wnids, natural, *lists, splits, reduced):
        write_set(out, name, images, classes, wnids)
        part = "train" if name.endswith("_train") else "val"
        write_view(out / name, name, images, part, store, records[part], seed)
        report.views.append(name)
        view = View(out / name)
        if view.meta["skipped"]:
            report.skipped[name] = view.meta["skipped"]
        if part == "train" and not (out / name / MEAN_FILE).is_file():
            means.append((out / name, len(view)))
        view.close()
    store.close()
    _write_means(means, workers, show_progress)
    report.means = [path.name for path, _ in means]
    return report


def _write_means(views: list[tuple[Path, int]], workers: int, show_progress: bool) -> None:
    """compute_image_mean of each view, `workers` views at a time."""
    if not views:
        return
    progress = Progress(sum(n for _, n in views), f"means of {len(views)} training sets") if show_progress else None
    sizes = {str(path): n for path, n in views}
    pool = multiprocessing.get_context("spawn").Pool(min(workers, len(views))) if workers > 1 else None
    try:
        jobs = [str(path) for path, _ in views]
        for path, mean in pool.imap_unordered(_mean_job, jobs) if pool else map(_mean_job, jobs):
            write_mean(os.path.join(path, MEAN_FILE), mean)
            if progress:
                progress.update(sizes[path])
    finally:
        if pool:
            pool.terminate()
        if progress:
            progress.close()
