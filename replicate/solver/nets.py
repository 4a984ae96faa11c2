"""Which nets a solver trains and tests, and the folder their file names are read against.

Caffe resolves the file names in a solver and a net against the directory it was started in;
we resolve them against the solver file's folder, which is the same thing for the usual
`cd run && caffe train -solver solver.prototxt` and lets a run be started from anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from replicate.errors import ReplicateError
from replicate.io.model import load_net
from replicate.io.upgrade import upgrade_net
from replicate.net.paths import absolute
from replicate.proto import caffe_pb2


@dataclass
class NetSpec:
    """One net of a solver: its definition, the state (phase, stages, level) it runs in and the
    folder the file names in its layers are read against."""

    param: caffe_pb2.NetParameter
    phase: int
    stages: tuple[str, ...]
    level: int
    origin: str
    folder: Path


def _read(name: str, base: Path) -> caffe_pb2.NetParameter:
    path = Path(absolute(name, base))
    if not path.is_file():
        hint = "" if Path(name).is_absolute() else (
            f": '{name}' is read against the solver's folder {base} (Caffe reads it against the folder "
            "caffe was started in, Caffe's root for its examples); give it relative to the solver or absolute")
        raise ReplicateError(f"net file {path} (named in the solver) does not exist{hint}")
    return load_net(path)


def _state(
    net: caffe_pb2.NetParameter, given: caffe_pb2.NetState | None, phase: int
) -> tuple[int, tuple[str, ...], int]:
    """(phase, stages, level) as Caffe's InitTrainNet/InitTestNets merge them: the solver's
    phase for the net, overridden by what the net's own `state` sets, then by what the solver's
    train_state/test_state sets (MergeFrom).  The net's own stages stay in `net`, where
    CompiledNet keeps them; the solver's are returned to be added."""
    state = caffe_pb2.NetState(phase=phase)
    state.MergeFrom(net.state)
    if given is not None:
        state.MergeFrom(given)
    return state.phase, tuple(given.stage) if given is not None else (), state.level


def train_net(solver: caffe_pb2.SolverParameter, base: Path) -> NetSpec:
    """Caffe's InitTrainNet: exactly one of train_net_param, train_net, net_param, net.  The
    solver's `weights`, which InitTrainNet would load into it, are refused: left unread, the net
    would silently train from its fillers instead of fine-tuning."""
    if solver.weights:
        raise ReplicateError(
            f"the solver's weights field ({', '.join(solver.weights)}) is not supported: "
            "give the weights to start from with train --weights"
        )
    given = [f for f in ("train_net_param", "train_net", "net_param", "net") if solver.HasField(f)]
    if len(given) != 1:
        raise ReplicateError(
            "a solver names its training net with exactly one of train_net_param, train_net, "
            f"net_param, net; found {given or 'none'}"
        )
    field = given[0]
    if field in ("train_net", "net"):
        param = _read(getattr(solver, field), base)
    else:
        param = upgrade_net(getattr(solver, field))
    phase, stages, level = _state(param, solver.train_state if solver.HasField("train_state") else None, caffe_pb2.TRAIN)
    return NetSpec(param, phase, stages, level, f"{field}", base)


def test_nets(solver: caffe_pb2.SolverParameter, base: Path) -> list[NetSpec]:
    """Caffe's InitTestNets: test_net_param, then test_net files, then `net` once per extra test_iter."""
    params: list[tuple[caffe_pb2.NetParameter, str]] = []
    params += [(upgrade_net(p), "test_net_param") for p in solver.test_net_param]
    params += [(_read(name, base), f"test_net {name}") for name in solver.test_net]
    generic = solver.HasField("net") or solver.HasField("net_param")
    if len(solver.test_iter) < len(params):
        raise ReplicateError(f"the solver has {len(params)} test net(s) but {len(solver.test_iter)} test_iter value(s)")
    if generic:
        template = _read(solver.net, base) if solver.HasField("net") else upgrade_net(solver.net_param)
        params += [(template, "net")] * (len(solver.test_iter) - len(params))
    if len(solver.test_iter) != len(params):
        raise ReplicateError(f"the solver has {len(params)} test net(s) but {len(solver.test_iter)} test_iter value(s)")
    if solver.test_state and len(solver.test_state) != len(params):
        raise ReplicateError("test_state must be given once per test net, or not at all")
    specs = []
    for i, (param, origin) in enumerate(params):
        phase, stages, level = _state(param, solver.test_state[i] if solver.test_state else None, caffe_pb2.TEST)
        specs.append(NetSpec(param, phase, stages, level, origin, base))
    return specs
