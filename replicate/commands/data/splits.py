"""Write the paper's datasets as Caffe lists: random halves, natural/man-made halves, reduced sets.

From Caffe's train/val lists (`<path> <class>`, class = index of the sorted wnid) writes, under
--out, `<set>/files.txt` and `<set>/idxmap.txt` (`<original> <new> <wnid>` a line) for the sets
whole, half0A..half3B, halfnatmanA/B (each `_train` and `_valid`) and reduced<kkkk>_train.  The
random halves are the authors' numpy draws, byte-identical to their files for ImageNet; classes
default to ILSVRC2012's 1000 and the families to the shipped WordNet-derived natural/man-made
file; for another dataset (e.g. `data synth`) give its --synsets and --families.  In place of
Caffe's lists, ImageNet as distributed can be read: --train-dir (one folder per wnid), --val-dir
(the flat validation folder) and --devkit (ILSVRC2012_devkit_t12, whose labels are converted to
Caffe's sorted-wnid order); whole_{train,valid}/files.txt are then Caffe's lists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replicate.data.devkit import train_entries, val_entries
from replicate.data.families import ILSVRC12_NATMAN, ILSVRC12_WNIDS, read_families
from replicate.data.splits import (
    PAPER_REDUCED,
    PAPER_SPLITS,
    ImageList,
    natman_classes,
    check_labels,
    read_list,
    read_synsets,
    write_splits,
)
from replicate.errors import ReplicateError


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if any(not 1 <= k <= 9999 for k in sizes):
        raise argparse.ArgumentTypeError(f"reduced sizes must lie in 1..9999: {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-list", type=Path, help="Caffe list of the training images")
    parser.add_argument("--val-list", type=Path, help="Caffe list of the validation images")
    parser.add_argument("--train-dir", type=Path,
                        help="ILSVRC2012 training folder (<wnid>/<image>), instead of --train-list")
    parser.add_argument("--val-dir", type=Path,
                        help="ILSVRC2012 validation folder (needs --devkit), instead of --val-list")
    parser.add_argument("--devkit", type=Path, help="ILSVRC2012_devkit_t12 folder (data/meta.mat, "
                        "data/ILSVRC2012_validation_ground_truth.txt)")
    parser.add_argument("--synsets", type=Path, default=ILSVRC12_WNIDS,
                        help="class wnids in label (sorted) order (default: ILSVRC2012's 1000)")
    parser.add_argument("--families", type=Path, default=ILSVRC12_NATMAN,
                        help="'<wnid> natural|man-made' a line, for halfnatman "
                             "(default: ILSVRC2012's, derived from WordNet)")
    parser.add_argument("--splits", type=int, default=PAPER_SPLITS,
                        help="number of random splits, seeds 0..N-1 (default: %(default)s)")
    parser.add_argument("--reduced", type=_sizes, default=PAPER_REDUCED,
                        help="images per class of the reduced training sets, comma-separated "
                             "(default: the paper's %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="folder that receives the sets")


def _training(args: argparse.Namespace, wnids: list[str]) -> ImageList | None:
    if args.train_list and args.train_dir:
        raise ReplicateError("give --train-list or --train-dir, not both")
    if args.train_dir:
        return check_labels(train_entries(args.train_dir, wnids), str(args.train_dir), len(wnids))
    return read_list(args.train_list, len(wnids)) if args.train_list else None


def _validation(args: argparse.Namespace, wnids: list[str]) -> ImageList | None:
    if args.val_list and args.val_dir:
        raise ReplicateError("give --val-list or --val-dir, not both")
    if args.val_dir:
        if args.devkit is None:
            raise ReplicateError("--val-dir needs --devkit (the validation labels are in it)")
        return check_labels(val_entries(args.val_dir, args.devkit, wnids), str(args.val_dir), len(wnids))
    return read_list(args.val_list, len(wnids)) if args.val_list else None


def run(args: argparse.Namespace) -> int:
    if not any((args.train_list, args.val_list, args.train_dir, args.val_dir)):
        raise ReplicateError("give --train-list/--train-dir and/or --val-list/--val-dir")
    if args.splits < 0:
        raise ReplicateError(f"--splits must be >= 0, got {args.splits}")
    if args.out.exists() and not args.out.is_dir():
        raise ReplicateError(f"{args.out}: exists and is not a folder")
    wnids = read_synsets(args.synsets)
    natural = natman_classes(wnids, read_families(args.families), str(args.families))
    train = _training(args, wnids)
    valid = _validation(args, wnids)
    written = write_splits(args.out, wnids, natural, train, valid, args.splits, args.reduced)
    print(f"wrote {len(written)} sets under {args.out} ({len(wnids)} classes)")
    return 0
