"""Write a view of the store (`data prepare`) as an ordinary Caffe LMDB, for real Caffe.

  python -m replicate data export-lmdb data/half0A_train half0A_train_lmdb

Keys `%08d_<list name>` (`00000000_n01440764/n01440764_10026.JPEG`), numbered in the view's
order: the keys convert_imageset --shuffle writes for the set's list in that order, read front to
back by Caffe's Data layer.  Datums raw or JPEG-encoded as the store holds them, labels as in the
set's list.  The LMDB is built as OUT.partial and renamed when complete (OUT may only be an LMDB
folder, replaced then, or not exist yet; anything else there, or an OUT that is, holds or lies
inside the view or its store, is refused before anything is written); the free space is checked
first, progress is shown, and an export stopped (Ctrl-C, SIGTERM, a full disk) resumes where it
stopped when run again.  `data mean OUT` then gives the view's mean.binaryproto bit for bit.
"""

from __future__ import annotations

import argparse

from replicate.data.signals import stop_on_signals
from replicate.data.view import export_lmdb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("view", help="a set folder written by `data prepare` (e.g. data/half0A_train)")
    parser.add_argument("out", help="LMDB folder to create (an LMDB there is replaced; anything else, refused)")


def run(args: argparse.Namespace) -> int:
    with stop_on_signals():
        count = export_lmdb(args.view, args.out)
    print(f"wrote {args.out}: {count:,} records")
    return 0
