"""ILSVRC2012 as distributed -> one store, every set of the paper as a view, each set's mean.

Steps, each resumable (a rerun of the same command skips what is done):

1. the store (`<out>/store`, `replicate.data.store`): every training and validation image decoded
   and resized once, in parallel, after the images listed were counted against what each class
   must hold (`replicate.data.complete`) and the free space against the bytes to write;
2. per set (`<out>/<set>`: whole, half{0..3}{A,B}, halfnatman{A,B}, each `_train` and `_valid`,
   and reduced<K>_train): the Caffe list and class map `data splits` writes (byte-identical to the
   authors' lists) and the view (`replicate.data.view`), rewritten only when it changed;
3. per training set whose view is new: its mean, in parallel over the sets, with progress counted
   in images (a set's mean alone reads up to 1.28M records).

Ctrl-C or SIGTERM stops any step in a few seconds, keeps what is done, and says how to resume.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from replicate.data.complete import Expected
from replicate.data.ilsvrc import Images
from replicate.data.progress import Progress
from replicate.data.space import require_space, size_text
from replicate.data.splits import PAPER_REDUCED, PAPER_SPLITS, paper_sets, write_set
from replicate.data.store import BuildReport, Store, StoreOptions, build_store, bytes_needed
from replicate.data.view import MEAN_FILE, View, check_seed, view_mean, write_view
from replicate.data.workers import Workers
from replicate.errors import ReplicateError
from replicate.io.binary import write_mean

STORE = "store"
#: Bytes the views and lists take per store image: 8 per set holding it, ~8 sets per image.
VIEW_BYTES = 64
#: Images a mean worker sums between two reports of its progress.
MEAN_REPORT_EVERY = 1024


@dataclass
class PrepareReport:
    store: BuildReport
    views: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # view -> list images the store lacks
    means: list[str] = field(default_factory=list)  # views whose mean was computed now


_summed = None  # in a mean worker: the count of images summed, shared with the parent


def _mean_worker_init(counter: multiprocessing.sharedctypes.Synchronized) -> None:
    global _summed
    _summed = counter


def _count_summed(n: int) -> None:
    with _summed.get_lock():
        _summed.value += n


def _mean_job(path: str) -> tuple[str, np.ndarray]:
    return path, view_mean(path, _count_summed, MEAN_REPORT_EVERY)


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
    expected: Expected | None = None,
    accept: Collection[str] = (),
) -> PrepareReport:
    """Build the store and the views of every set of the paper under `out` (see the module doc);
    `expected` and `accept`: what each class must hold and the classes whose gaps are accepted
    (`build_store`)."""
    check_seed(out, seed)
    parts = [(part, images) for part, images in (("train", train), ("val", val)) if images is not None]
    total = sum(len(images) for _, images in parts)
    if expected is None:
        expected = Expected.listed([(part, images.labels) for part, images in parts], wnids)
    need = bytes_needed(out / STORE, parts, options) + VIEW_BYTES * total
    require_space(out, need, f"the store of {total:,} images ({options.format}) and the views")
    report = PrepareReport(build_store(out / STORE, parts, options, workers, show_progress, expected, accept))
    store = Store(out / STORE)
    records = {part: store.records_of(part) for part, _ in parts}
    lists = [images.image_list(part) if images is not None else None for part, images in (("train", train), ("val", val))]
    means = []
    for name, images, classes in paper_sets(wnids, natural, *lists, splits, reduced):
        write_set(out, name, images, classes, wnids)
        part = "train" if name.endswith("_train") else "val"
        held = set(classes.tolist())
        gaps = [gap for gap in report.store.gaps if gap.part == part and gap.label in held]
        write_view(out / name, name, images, part, store, records[part], seed, gaps)
        report.views.append(name)
        view = View(out / name)
        if view.meta["skipped"]:
            report.skipped[name] = view.meta["skipped"]
        if part == "train" and not (out / name / MEAN_FILE).is_file():
            means.append((out / name, len(view)))
        view.close()
    record = float(np.mean(store.index["length"][:1000])) if len(store) else 0.0
    store.close()
    if means and show_progress:
        images = sum(n for _, n in means)
        print(f"means of {len(means)} training sets: {images:,} images to read, ~{size_text(images * record)} "
              f"from {out / STORE}", file=sys.stderr)
    written: list[str] = []
    try:
        _write_means(means, workers, show_progress, written)
    except KeyboardInterrupt as stop:
        raise ReplicateError(f"{getattr(stop, 'name', 'SIGINT')}: stopped computing the means, {len(written)} of "
                             f"{len(means)} written; run the same command again to compute the rest") from None
    report.means = written
    return report


def _write_means(views: list[tuple[Path, int]], workers: int, show_progress: bool, written: list[str]) -> None:
    """compute_image_mean of each view, `workers` views at a time; the names of the views whose
    mean is written go into `written` as they are."""
    if not views:
        return
    progress = Progress(sum(n for _, n in views), f"means of {len(views)} training sets") if show_progress else None
    advance: Callable[[int], None] = progress.update if progress else (lambda n: None)
    jobs = [str(path) for path, _ in views]
    if workers == 1:
        try:
            for path in jobs:
                write_mean(os.path.join(path, MEAN_FILE), view_mean(path, advance, MEAN_REPORT_EVERY))
                written.append(Path(path).name)
        finally:
            if progress:
                progress.close()
        return
    summed = multiprocessing.get_context("spawn").Value("q", 0)
    pool = Workers(min(workers, len(views)), _mean_worker_init, (summed,))
    try:
        shown = 0
        for result in pool.unordered(_mean_job, jobs, wait=1.0):
            if result is not None:
                path, mean = result
                write_mean(os.path.join(path, MEAN_FILE), mean)
                written.append(Path(path).name)
            now = summed.value
            advance(now - shown)
            shown = now
    finally:
        pool.close()
        if progress:
            progress.close()
