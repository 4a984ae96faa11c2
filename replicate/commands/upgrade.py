"""Upgrade a legacy Caffe file (V0/V1 net, old solver, V1 .caffemodel) to the current format.

Like Caffe's upgrade_net_proto_text / upgrade_solver_proto_text / upgrade_net_proto_binary:
a text net or solver is written as current text, a binary .caffemodel as a V2 binary.

  python -m replicate upgrade imagenet_train.prototxt train.v2.prototxt
  python -m replicate upgrade imagenet_solver.prototxt solver.v2.prototxt --solver
  python -m replicate upgrade caffenet.v1.caffemodel caffenet.caffemodel
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replicate.io.binary import write_atomic
from replicate.io.model import load_caffemodel, load_net, load_solver, save_caffemodel
from replicate.io.prototxt import format_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="legacy .prototxt or .caffemodel")
    parser.add_argument("output", type=Path, help="where to write the upgraded file")
    parser.add_argument("--solver", action="store_true", help="the input is a solver prototxt")


def run(args: argparse.Namespace) -> int:
    if args.input.suffix in (".caffemodel", ".binaryproto") and not args.solver:
        save_caffemodel(args.output, load_caffemodel(args.input))
    else:
        message = load_solver(args.input) if args.solver else load_net(args.input)
        write_atomic(args.output, format_text(message).encode())
    print(f"wrote {args.output}")
    return 0
