"""Prepare ImageNet for the paper from its files: one store, every set as a view, their means.

  python -m replicate data prepare --train ILSVRC2012_img_train.tar --val ILSVRC2012_img_val.tar \
      --devkit ILSVRC2012_devkit_t12.tar.gz --out data/ [--format raw|jpeg]
  python -m replicate data prepare --train train.txt --train-root /imagenet/train/ \
      --val val.txt --val-root /imagenet/val/ --out data/

--train: ILSVRC2012_img_train.tar (per-class tars inside; read in place, nothing is extracted), a
folder of those class tars or of class folders, or Caffe's train.txt with --train-root.  --val:
ILSVRC2012_img_val.tar or its folder, or val.txt with --val-root.  ILSVRC2012's own files need
--devkit (its folder or .tar.gz): the validation labels, mapped to Caffe's sorted-wnid class
order, and each class's image count are in it.  Every class must hold the images the devkit (or
the Caffe list) says, checked on the tars before decoding and on the records after; a short or
damaged class is an error naming it, unless accepted with --accept-gap WNID (then listed in
store.json and in the view.json of every set holding it).  Every image is decoded and resized
once (OpenCV, as Caffe's convert_imageset, 256x256 by default) into DIR/store, raw pixels (exact;
~197 KB per image) or JPEG (--quality).  Then each set of the paper (whole, half0A..half3B,
halfnatmanA/B, each _train and _valid, reduced<K>_train) gets DIR/<set>/files.txt and idxmap.txt
(as `data splits`, byte-identical to the authors' lists), a view into the store in its own seeded
shuffled order, and for training sets the mean.binaryproto.  `generate --data DIR` makes nets that
read the views; `data export-lmdb` writes a view as a Caffe LMDB.  The free space is checked
first; Ctrl-C or SIGTERM stops in seconds, and the same command resumes.  See docs/data.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from replicate.commands.data.splits import _sizes
from replicate.data.complete import Expected, check_devkit_total
from replicate.data.cpus import available_cpus
from replicate.data.devkit import read_devkit, train_counts, val_truth
from replicate.data.families import ILSVRC12_NATMAN, ILSVRC12_WNIDS, read_families
from replicate.data.ilsvrc import Images, train_images, val_images
from replicate.data.prepare import STORE, prepare
from replicate.data.signals import stop_on_signals
from replicate.data.splits import PAPER_REDUCED, PAPER_SPLITS, natman_classes, read_synsets
from replicate.data.store import FORMATS, StoreOptions
from replicate.errors import ReplicateError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", type=Path, help="ILSVRC2012_img_train.tar, its folder, or Caffe's train.txt")
    parser.add_argument("--train-root", type=Path, help="folder the paths of a train.txt are in")
    parser.add_argument("--val", type=Path, help="ILSVRC2012_img_val.tar, its folder, or Caffe's val.txt")
    parser.add_argument("--val-root", type=Path, help="folder the paths of a val.txt are in")
    parser.add_argument("--devkit", type=Path, help="ILSVRC2012_devkit_t12.tar.gz or its folder (validation labels)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the store and the sets")
    parser.add_argument("--format", choices=FORMATS, default="raw",
                        help="raw pixels (exact, default) or JPEG records (~10x smaller)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of --format jpeg (default 90)")
    parser.add_argument("--resize", nargs=2, type=int, default=[256, 256], metavar=("H", "W"),
                        help="resize every image to H x W (default 256 256, Caffe's ImageNet; 0 0 keeps sizes)")
    parser.add_argument("--gray", action="store_true", help="store grey images (1 channel)")
    parser.add_argument("--synsets", type=Path, default=ILSVRC12_WNIDS,
                        help="class wnids in label (sorted) order (default: ILSVRC2012's 1000)")
    parser.add_argument("--families", type=Path, default=ILSVRC12_NATMAN,
                        help="'<wnid> natural|man-made' a line, for halfnatman (default: ILSVRC2012's)")
    parser.add_argument("--splits", type=int, default=PAPER_SPLITS, help="random splits, seeds 0..N-1 (default 4)")
    parser.add_argument("--reduced", type=_sizes, default=PAPER_REDUCED,
                        help="images per class of the reduced sets, comma-separated (default: the paper's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the views' shuffles (default 0)")
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="decoding processes (default: the CPUs this process may use)")
    parser.add_argument("--accept-gap", action="append", default=[], metavar="WNID[,WNID...]",
                        help="go on although these classes lack images (repeatable); the gaps are listed in "
                             "store.json and in the sets' view.json")


def _is_list(source: Path, root: Path | None) -> bool:
    return root is not None or source.suffix == ".txt"


def _expected(args: argparse.Namespace, wnids: list[str], train: Images | None, val: Images | None) -> Expected:
    """What each class must hold: the devkit's counts for ILSVRC2012's files, a list's own for a list."""
    counts, source = {}, {}
    kit = read_devkit(args.devkit) if args.devkit else None
    for part, images, given, root in (("train", train, args.train, args.train_root),
                                      ("val", val, args.val, args.val_root)):
        if images is None:
            continue
        if _is_list(given, root) or kit is None:
            counts[part], source[part] = np.bincount(images.labels, minlength=len(wnids)), str(given)
        elif part == "train":
            counts[part], source[part] = train_counts(kit, wnids), f"{kit.meta_where} num_train_images"
            check_devkit_total(wnids, part, counts[part], kit.meta_where)
        else:
            labels = np.array([label for _, label in val_truth(kit, wnids)], np.int64)
            counts[part], source[part] = np.bincount(labels, minlength=len(wnids)), kit.ground_truth_where
            check_devkit_total(wnids, part, counts[part], kit.ground_truth_where)
    return Expected(wnids, counts, source)


def _accepted(values: list[str], wnids: list[str]) -> set[str]:
    accepted = {w.strip() for value in values for w in value.split(",") if w.strip()}
    unknown = sorted(accepted - set(wnids))
    if unknown:
        raise ReplicateError(f"--accept-gap {unknown[0]}: not one of the {len(wnids)} classes")
    return accepted


def run(args: argparse.Namespace) -> int:
    if args.train is None and args.val is None:
        raise ReplicateError("give --train and/or --val")
    height, width = args.resize
    if (height > 0) != (width > 0) or height < 0 or width < 0:
        raise ReplicateError(f"--resize {height} {width}: give two positive sizes, or 0 0 to keep sizes")
    if args.splits < 0 or args.workers < 1:
        raise ReplicateError("--splits must be 0 or more and --workers at least 1")
    if args.train is not None and not _is_list(args.train, args.train_root) and args.devkit is None:
        raise ReplicateError(f"--train {args.train}: ILSVRC2012's files need --devkit, whose num_train_images "
                             "tells a whole class from a cut one")
    options = StoreOptions(args.format, (height, width) if height else None, args.quality, not args.gray)
    options.check()
    wnids = read_synsets(args.synsets)
    accept = _accepted(args.accept_gap, wnids)
    natural = natman_classes(wnids, read_families(args.families), str(args.families))
    with stop_on_signals():
        train = train_images(args.train, wnids, args.train_root) if args.train else None
        val = val_images(args.val, wnids, args.devkit, args.val_root) if args.val else None
        expected = _expected(args, wnids, train, val)
        counts = ", ".join(f"{len(images):,} {part}" for part, images in (("train", train), ("val", val)) if images)
        print(f"{counts} images, {len(wnids)} classes; store {args.out / STORE} ({args.format}), "
              f"{args.workers} workers", file=sys.stderr)
        report = prepare(args.out, train, val, wnids, natural, options, args.splits, args.reduced, args.seed,
                         args.workers, expected=expected, accept=accept)
    built = report.store
    for name, reason in built.failed[:20]:
        print(f"failed {name}: {reason}", file=sys.stderr)
    if len(built.failed) > 20:
        print(f"... {len(built.failed) - 20} more in {args.out / STORE / 'failed.txt'}", file=sys.stderr)
    for gap in built.gaps:
        print(f"accepted gap: {gap.text()}", file=sys.stderr)
    made = built.written + len(built.failed) - built.resumed_at
    if built.seconds > 0 and made > 0:
        rate = made / built.seconds
        print(f"decoded {made:,} images in {built.seconds:.0f} s: {rate:.0f} images/s, "
              f"{rate / args.workers:.0f} per worker", file=sys.stderr)
    for name, n in report.skipped.items():
        print(f"{name}: {n} images of its list are not in the store (failed)", file=sys.stderr)
    checked = "; ".join(f"{part} as {expected.source[part]} says" for part in expected.counts)
    gaps = f", {len(built.gaps)} classes with gaps accepted" if built.gaps else ""
    print(f"wrote {args.out / STORE}: {built.written:,} images, {len(built.failed)} failed{gaps} (every class "
          f"counted: {checked}); {len(report.views)} views, {len(report.means)} means computed")
    return 0
