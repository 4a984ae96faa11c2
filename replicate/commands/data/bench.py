"""Measure how fast each data path delivers training batches from an LMDB (images/s).

Paths: one process (serial), --workers worker processes, and with --gpu the GPU path (records
read in this process and by --workers processes, copied or JPEG-decoded on the GPU,
crop/mirror/mean there).  Batches are TRAIN-phase: random crop
(--crop, default 227 or the image size if smaller) and mirror, plus --mean if given.  The first
batch of each path is not timed (worker start-up, CUDA initialisation).
"""

from __future__ import annotations

import argparse

import torch

from replicate.data.sources import LmdbSource
from replicate.data.throughput import Rate, loader_rates, train_maker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lmdb", required=True, help="LMDB of Datum records")
    parser.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per path (default 10)")
    parser.add_argument("--workers", type=int, default=0, help="also time this many worker processes")
    parser.add_argument("--gpu", action="store_true", help="also time the GPU path")
    parser.add_argument("--crop", type=int, default=227, help="crop size (default 227)")
    parser.add_argument("--mean", help="mean file to subtract")
    parser.add_argument("--threads", type=int, help="torch threads of this process (default: torch's)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    source = LmdbSource(args.lmdb)
    maker = train_maker(source, args.batch, args.crop, args.mean)
    print(
        f"{args.lmdb}: {len(source)} records, batch {args.batch}, crop {maker.transformer.crop}, "
        f"{args.batches} batches, {torch.get_num_threads()} torch threads here (1 per worker)"
    )
    for path, value in loader_rates(maker, args.batches, args.workers, args.gpu).items():
        name = path
        if path.startswith("workers_"):
            name = path.replace("workers_", "") + " workers"
        elif path.startswith("gpu"):
            readers = path.replace("gpu_workers_", "") + " reading workers" if path != "gpu" else "read here"
            name = f"gpu, {readers}" + (f" ({torch.cuda.get_device_name()})" if isinstance(value, Rate) else "")
        shown = (f"{value.images_per_s:.0f} images/s, this process {1e6 * value.consumer_cpu_s_per_image:.1f} "
                 f"CPU µs per image" if isinstance(value, Rate) else value)
        print(f"{name}: {shown}")
    return 0
