"""Upgrade a legacy Caffe file (V0/V1 net, old solver, V1 .caffemodel) to the current format.

Like Caffe's upgrade_net_proto_text / upgrade_solver_proto_text / upgrade_net_proto_binary:
a text net or solver is written as current text, a binary .caffemodel as a V2 binary.  As in
Caffe's tool, the blobs of a V1 .caffemodel keep their legacy 4-D dims (num, channels, height,
width): Caffe copies those into a bias of 4 or an InnerProduct weight of 5x196 by its 4-D rule,
where a `shape` of 1x1x1x4 would have to equal the blob's exactly and abort the copy.

  python -m replicate upgrade imagenet_train.prototxt train.v2.prototxt
  python -m replicate upgrade imagenet_solver.prototxt solver.v2.prototxt --solver
  python -m replicate upgrade caffenet.v1.caffemodel caffenet.caffemodel

A solver read without --solver (or a net with it) fails to parse: the error says which option
reads it.  OUTPUT is a file whose folder exists, checked before anything is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from google.protobuf.message import Message

from replicate.errors import ReplicateError
from replicate.io.binary import write_atomic
from replicate.io.model import load_caffemodel, load_net, load_solver
from replicate.io.prototxt import format_text, parse_text
from replicate.proto import caffe_pb2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="legacy .prototxt or .caffemodel")
    parser.add_argument("output", type=Path, help="where to write the upgraded file")
    parser.add_argument("--solver", action="store_true", help="the input is a solver prototxt")


def _check_output(output: Path, source: Path) -> None:
    """The output must be a file in a folder that exists: said before the input is read, not as
    the traceback of the final rename."""
    if output.is_dir():
        raise ReplicateError(f"{output}: is a folder; name the file to write, e.g. {output / source.name}")
    if not output.absolute().parent.is_dir():
        raise ReplicateError(f"{output}: folder {output.absolute().parent} does not exist")


def _other_kind_hint(path: Path, as_solver: bool) -> str:
    """When a text that failed to parse as one kind (net or solver) parses as the other, the
    option that reads it so: Caffe's files are hard to tell apart by name (imagenet_solver.prototxt
    vs imagenet_train.prototxt)."""
    other: Message = caffe_pb2.NetParameter() if as_solver else caffe_pb2.SolverParameter()
    try:
        parse_text(path.read_text(encoding="utf-8"), other)
    except (ReplicateError, OSError, UnicodeDecodeError):
        return ""
    return "it parses as a net: leave out --solver" if as_solver else "it parses as a solver: pass --solver"


def run(args: argparse.Namespace) -> int:
    _check_output(args.output, args.input)
    if args.input.suffix in (".caffemodel", ".binaryproto") and not args.solver:
        data = load_caffemodel(args.input).SerializeToString()
    else:
        try:
            message = load_solver(args.input) if args.solver else load_net(args.input)
        except ReplicateError as err:
            hint = _other_kind_hint(args.input, args.solver)
            raise (ReplicateError(f"{str(err).rstrip('.')}; {hint}") if hint else err) from None
        data = format_text(message).encode()
    try:
        write_atomic(args.output, data)
    except OSError as err:
        raise ReplicateError(f"{args.output}: cannot write ({err.strerror})") from None
    print(f"wrote {args.output}")
    return 0
