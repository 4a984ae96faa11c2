"""Compute the mean image of an LMDB (Caffe's compute_image_mean) into a .binaryproto.

The mean is accumulated in float32 record by record as Caffe does and written as a BlobProto
with legacy num/channels/height/width dimensions, readable by Caffe's transform_param.mean_file.
"""

from __future__ import annotations

import argparse

import numpy as np

from replicate.data.mean import compute_mean
from replicate.io.binary import write_mean


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lmdb", help="LMDB of Datum records")
    parser.add_argument("--out", required=True, help="output mean file (.binaryproto)")


def run(args: argparse.Namespace) -> int:
    mean = compute_mean(args.lmdb, show_progress=True)
    write_mean(args.out, mean)
    per_channel = ", ".join(f"{v:.4f}" for v in mean[0].mean(axis=(1, 2), dtype=np.float64))
    print(f"wrote {args.out}: {'x'.join(map(str, mean.shape[1:]))} mean, per channel {per_channel}")
    return 0
