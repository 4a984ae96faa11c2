"""Generate a small ImageNet-like dataset (two families of pattern classes) for the demo.

Writes, under --out, ILSVRC2012's layout: train/<wnid>/<wnid>_<iiiii>.JPEG,
val/ILSVRC2012_val_<nnnnnnnn>.JPEG, Caffe lists train.txt and val.txt (paths relative to train/
and val/), synsets.txt, families.txt ('<wnid> natural|man-made', for `data splits --families`)
and synth.json (the parameters).  Same parameters, same bytes.  Running it again on a folder
that already holds the same dataset does nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replicate.data.synth import SynthConfig, generate

DEFAULTS = SynthConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to create")
    parser.add_argument("--classes", type=int, default=DEFAULTS.classes,
                        help="number of classes, half natural, half man-made (default: %(default)s)")
    parser.add_argument("--train-per-class", type=int, default=DEFAULTS.train_per_class,
                        help="training images per class (default: %(default)s)")
    parser.add_argument("--val-per-class", type=int, default=DEFAULTS.val_per_class,
                        help="validation images per class (default: %(default)s)")
    parser.add_argument("--size", type=int, default=DEFAULTS.size,
                        help="image side in pixels (default: %(default)s; nets crop 32)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="(default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    config = SynthConfig(args.classes, args.train_per_class, args.val_per_class, args.size, args.seed)
    if generate(args.out, config):
        print(f"wrote {config.classes} classes x ({config.train_per_class} train + "
              f"{config.val_per_class} val) images of {config.size}x{config.size} under {args.out}")
    else:
        print(f"{args.out} already holds this dataset")
    return 0
