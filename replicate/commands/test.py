"""Score a trained net on its TEST-phase data, like `caffe test`.

  python -m replicate test --model val.prototxt --weights W.caffemodel --iterations 100
"""

from __future__ import annotations

import argparse

from replicate.solver.device import PRECISIONS
from replicate.solver.run import test


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="net .prototxt (run in the TEST phase)")
    parser.add_argument("--weights", help="trained .caffemodel (needed, as by caffe test)")
    parser.add_argument("--allow-missing-layers", metavar="NAME,...|all",
                        help="score the net although the weights lack these layers (they keep their fillers)")
    parser.add_argument("--iterations", type=int, default=50, help="number of batches (default 50)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")


def run(args: argparse.Namespace) -> int:
    test(args.model, args.weights, args.iterations, args.device, args.precision, args.allow_missing_layers)
    return 0
