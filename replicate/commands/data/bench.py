"""Measure how fast each data path delivers training batches from an LMDB (images/s).

Paths: one process (serial), --workers worker processes, and with --gpu the GPU path (records
copied or JPEG-decoded on the GPU, crop/mirror/mean there).  Batches are TRAIN-phase: random crop
(--crop, default 227 or the image size if smaller) and mirror, plus --mean if given.  The first
batch of each path is not timed (worker start-up, CUDA initialisation).
"""

from __future__ import annotations

import argparse
import time

import torch

from replicate.data.loader import BatchMaker, GpuLoader, LmdbSource, SerialLoader, WorkerLoader
from replicate.data.transform import TRAIN, DataTransformer
from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lmdb", required=True, help="LMDB of Datum records")
    parser.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per path (default 10)")
    parser.add_argument("--workers", type=int, default=0, help="also time this many worker processes")
    parser.add_argument("--gpu", action="store_true", help="also time the GPU path")
    parser.add_argument("--crop", type=int, default=227, help="crop size (default 227)")
    parser.add_argument("--mean", help="mean file to subtract")
    parser.add_argument("--threads", type=int, help="torch threads of this process (default: torch's)")


def _rate(loader, batches: int, batch_size: int, sync: bool = False) -> float:
    next(loader)
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    if sync:
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    source = LmdbSource(args.lmdb)
    first = source.reader.datum(0)
    param = caffe_pb2.TransformationParameter(mirror=True)
    if not first.encoded:
        param.crop_size = min(args.crop, first.height, first.width)
    else:
        param.crop_size = args.crop
    if args.mean:
        param.mean_file = args.mean
    maker = BatchMaker(source, DataTransformer(param, TRAIN, "bench"), args.batch, seed=0)
    print(
        f"{args.lmdb}: {len(source)} records, batch {args.batch}, crop {param.crop_size}, "
        f"{args.batches} batches, {torch.get_num_threads()} torch threads here (1 per worker)"
    )
    print(f"serial: {_rate(SerialLoader(maker), args.batches, args.batch):.0f} images/s")
    if args.workers > 0:
        loader = WorkerLoader(maker, args.workers)
        try:
            print(f"{args.workers} workers: {_rate(loader, args.batches, args.batch):.0f} images/s")
        finally:
            loader.close()
    if args.gpu:
        try:
            gpu = GpuLoader(maker, "cuda")
            print(f"gpu ({torch.cuda.get_device_name()}): {_rate(gpu, args.batches, args.batch, sync=True):.0f} images/s")
        except ReplicateError as err:
            print(f"gpu: unavailable ({err})")
    return 0
