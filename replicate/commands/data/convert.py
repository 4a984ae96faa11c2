"""Convert an image list into an LMDB of Caffe Datum records (Caffe's convert_imageset).

Reads `<path> <label>` lines (paths relative to --root), resizes every image to H x W (default
256 x 256, aspect ratio not kept) with OpenCV's bilinear interpolation, and stores BGR uint8
CHW records, or encoded ones with --encoded (each file's own format, its own bytes when not
resized; --encode-type for one format), under keys `%08d_<path>` in list order (shuffle
a class-sorted training list with --shuffle, as ImageNet's LMDBs were made: Caffe's Data layer
reads records in order, so unshuffled batches hold a single class).  Images
that cannot be read are listed and skipped (the count is reported), or stop everything with
--strict.  The LMDB is built as OUT.partial and renamed to OUT when complete.  OUT may only be
an LMDB folder (data.mdb, lock.mdb) or not exist yet: anything else there, or an OUT that is,
holds or lies inside the list or the image root, is refused before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys

from replicate.data.convert import ConvertOptions, convert, shuffled
from replicate.data.cpus import available_cpus
from replicate.data.imagelist import image_list_lines, read_image_list
from replicate.data.lmdb_io import check_lmdb_out
from replicate.errors import ReplicateError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", required=True, help="image list: '<path> <integer label>' per line")
    parser.add_argument("--root", required=True, help="folder the list's paths are relative to")
    parser.add_argument("--out", required=True,
                        help="LMDB folder to create (an LMDB there is replaced; anything else, refused)")
    parser.add_argument("--resize", nargs=2, type=int, default=[256, 256], metavar=("H", "W"),
                        help="resize every image to H x W (default 256 256; 0 0 keeps sizes)")
    parser.add_argument("--encoded", action="store_true",
                        help="store encoded images, each in its file's format (the file's bytes "
                             "when not resized)")
    parser.add_argument("--encode-type", default="", metavar="TYPE",
                        help="store every image encoded as TYPE (jpg, png, bmp, ...); implies --encoded")
    parser.add_argument("--gray", action="store_true",
                        help="read images as grey (1 channel); with --encoded and no resize a file is "
                             "stored as it is, as convert_imageset does")
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="decoding processes (default: one per CPU this process may use)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    parser.add_argument("--check-size", action="store_true",
                        help="stop at a record whose size is not the first one's (raw records)")
    parser.add_argument("--shuffle", action="store_true",
                        help="store the images in a random order (convert_imageset --shuffle)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")


def run(args: argparse.Namespace) -> int:
    height, width = args.resize
    if (height > 0) != (width > 0) or height < 0 or width < 0:
        raise ReplicateError(f"--resize {height} {width}: give two positive sizes, or 0 0 to keep sizes")
    if not os.path.isdir(args.root):
        raise ReplicateError(f"{args.root}: image root folder does not exist")
    check_lmdb_out(args.out, (("image list", args.list), ("image root", args.root)))
    # Unshuffled, records are numbered by list line, blank lines included, as convert_imageset's.
    entries = shuffled(read_image_list(args.list), args.seed) if args.shuffle else image_list_lines(args.list)
    options = ConvertOptions(
        root=args.root,
        resize=(height, width) if height else None,
        encoded=args.encoded,
        encode_type=args.encode_type,
        color=not args.gray,
        check_size=args.check_size,
    )
    report = convert(entries, args.out, options, workers=max(1, args.workers), strict=args.strict)
    for path, reason in report.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"wrote {args.out}: {report.written} records, {len(report.failed)} images skipped")
    return 0
