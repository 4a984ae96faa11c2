"""Load nets, solvers and weights in any Caffe format as current (V2) messages; save weights.

These are the only entry points the rest of the project uses to read Caffe files, so every
reader sees upgraded messages and never has to care which year a file was written in.
"""

from __future__ import annotations

import os

from replicate.io.binary import read_net_binary, write_atomic
from replicate.io.prototxt import read_net_text, read_solver_text
from replicate.io.upgrade import upgrade_net, upgrade_solver
from replicate.proto import caffe_pb2


def load_net(path: str | os.PathLike[str]) -> caffe_pb2.NetParameter:
    """A net prototxt (V0, V1 or V2 text) as a V2 NetParameter."""
    return upgrade_net(read_net_text(path))


def load_solver(path: str | os.PathLike[str]) -> caffe_pb2.SolverParameter:
    """A solver prototxt with the deprecated `solver_type` enum upgraded to `type`."""
    return upgrade_solver(read_solver_text(path))


def load_caffemodel(path: str | os.PathLike[str]) -> caffe_pb2.NetParameter:
    """A binary .caffemodel (V1 or V2, any size) as a V2 NetParameter with its blobs."""
    return upgrade_net(read_net_binary(path))


def save_caffemodel(path: str | os.PathLike[str], net: caffe_pb2.NetParameter) -> None:
    """Write `net` (V2) atomically, its blobs in the shape form they have (see the `upgrade`
    command for why legacy 4-D dims stay legacy)."""
    write_atomic(path, net.SerializeToString())
