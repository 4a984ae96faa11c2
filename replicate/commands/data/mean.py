"""Compute the mean image of an LMDB (Caffe's compute_image_mean) into a .binaryproto.

The mean is accumulated in float32 record by record as Caffe does and written as a BlobProto
with legacy num/channels/height/width dimensions, readable by Caffe's transform_param.mean_file.
The output is checked before the LMDB is read (a folder, a path inside the LMDB or through a file
is refused in one line); a missing parent folder is created, as `data convert` creates OUT's.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from replicate.data.destination import refuse_blocked_parent, refuse_overlap
from replicate.data.mean import compute_mean
from replicate.errors import ReplicateError
from replicate.io.binary import write_mean


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lmdb", help="LMDB of Datum records")
    parser.add_argument("--out", required=True, help="output mean file (.binaryproto)")


def run(args: argparse.Namespace) -> int:
    refuse_overlap(args.out, (("LMDB", args.lmdb),))
    if os.path.isdir(args.out):
        raise ReplicateError(f"{args.out}: is a folder; give the mean file's path")
    refuse_blocked_parent(args.out)
    mean = compute_mean(args.lmdb, show_progress=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_mean(args.out, mean)
    per_channel = ", ".join(f"{v:.4f}" for v in mean[0].mean(axis=(1, 2), dtype=np.float64))
    print(f"wrote {args.out}: {'x'.join(map(str, mean.shape[1:]))} mean, per channel {per_channel}")
    return 0
