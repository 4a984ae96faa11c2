"""Caffe's Solver::Snapshot and Solver::Restore: a run's snapshot files, written and read back.

A snapshot is Caffe's two files, `<prefix>_iter_N.caffemodel` (the weights) and
`<prefix>_iter_N.solverstate` (iteration, lr step, update history), plus our resume sidecar
(replicate.solver.resume: data positions and random streams), so that a run resumed from any
snapshot of ours continues bit for bit, and one resumed from real Caffe's continues as Caffe's
would.  The files are built and written behind the training loop (replicate.solver.snapshot_writer);
the loop waits only for a copy of the weights and history to host memory.

What these functions need from a solver they are given: its nets (the train net first), the
update rule's history, the iteration and lr step; they set nothing on it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from google.protobuf.message import DecodeError

from replicate.errors import ReplicateError
from replicate.io.binary import refuse_hdf5, remove_temporaries, write_atomic
from replicate.io.blobs import array_to_blob, blob_to_array
from replicate.io.model import load_caffemodel
from replicate.net.compile import CompiledNet
from replicate.net.copy_check import WeightsLoad, learnable_layers
from replicate.net.paths import absolute
from replicate.net.weights import copy_trained_layers, net_to_proto
from replicate.proto import caffe_pb2
from replicate.solver import resume
from replicate.solver.data_feed import data_layers
from replicate.solver.log import RunLog
from replicate.solver.snapshot_writer import SnapshotWriter, prune

#: Each data layer's position (`DataLayer.position()` and its name), per net.
Positions = list[list[dict[str, int | str]]]


def weights_not_state(path: Path) -> str:
    """The error for a .caffemodel given where a .solverstate belongs (`train --snapshot`): read
    as a SolverState, its bytes would otherwise say only that it holds no history blobs."""
    return (f"{path}: is a .caffemodel (weights), not a .solverstate: --snapshot resumes from a "
            f".solverstate; to start from these weights give --weights {path}")


def _is_weights(data: bytes) -> bool:
    """The bytes parse as a NetParameter with layers: a .caffemodel, whatever its name."""
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(data)
    except DecodeError:
        return False
    return bool(net.layer or net.layers)


def host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A float32 copy in host memory that later updates of `tensor` leave alone."""
    return tensor.detach().to("cpu", torch.float32, copy=True)


def data_positions(nets: Sequence[CompiledNet]) -> Positions:
    """Each data layer's position, per net, in the order of `nets`."""
    return [[{"layer": layer.name, **layer.position()} for layer in data_layers([net])] for net in nets]


class Snapshots:
    """Where a run's snapshots go and how they are written: the solver's `snapshot_prefix`
    (relative to its `folder`), one set at a time on a background writer, all but the `keep`
    newest (and the final one) pruned once a set is on disk (`keep` 0 keeps all, as Caffe)."""

    def __init__(self, param: caffe_pb2.SolverParameter, folder: Path, log: RunLog, keep: int) -> None:
        self.param = param
        self.folder = folder
        self.log = log
        self.keep = keep
        self._writer = SnapshotWriter()

    def name(self, iteration: int, extension: str) -> str:
        """`<prefix>_iter_N<ext>` as Caffe writes it into logs and the solverstate's learned_net."""
        prefix = self.param.snapshot_prefix
        if not prefix:
            raise ReplicateError("the solver sets snapshot but no snapshot_prefix")
        return f"{prefix}_iter_{iteration}{extension}"

    def check_folder(self, is_main: bool) -> None:
        """Caffe's CheckSnapshotWritePermissions, before training: the snapshot folder must be
        writable (we create it when missing, where Caffe would stop).  The main process also
        removes the temporary files a killed run's writer left there."""
        if not (self.param.snapshot or self.param.snapshot_prefix):
            return
        folder = Path(absolute(self.name(0, ".tempfile"), self.folder)).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise ReplicateError(
                f"cannot write snapshots with prefix '{self.param.snapshot_prefix}' in {folder}: {e.strerror}"
            ) from e
        if is_main:
            for name in remove_temporaries(folder, Path(f"{self.param.snapshot_prefix}_iter_").name):
                self.log.info(f"Removed {name}, a snapshot file left unfinished by a killed run")

    def write(
        self, iteration: int, current_step: int, nets: Sequence[CompiledNet], history: Sequence[torch.Tensor],
        device: torch.device, tests_at: Positions | None = None, after: Callable[[], None] | None = None,
    ) -> Path:
        """Write `<prefix>_iter_N.caffemodel` of the train net `nets[0]`, its resume sidecar and
        `.solverstate` with `history`, each atomically and in that order (the solverstate last:
        see replicate.solver.resume); returns the state path.  `tests_at`: the test nets' data
        positions to record instead of where they stand (mid-test, a SIGHUP while testing: those
        from before this round of tests, which a resumed run repeats).  `after` is called on the
        writer's thread once the solverstate is on disk.

        The caller waits only for one copy of the weights and history to host memory and for the
        data positions and random states: the files are built and written by the background
        writer.  Call `wait()` to be sure they are on disk.
        """
        train_net = nets[0]
        model_name, state_name = self.name(iteration, ".caffemodel"), self.name(iteration, ".solverstate")
        model_path, state_path = Path(absolute(model_name, self.folder)), Path(absolute(state_name, self.folder))
        net = train_net.to_proto()
        blobs = {name: [host_copy(t) for t in ts] for name, ts in train_net.layer_blobs().items()}
        history = [host_copy(h) for h in history]
        state = caffe_pb2.SolverState(iter=iteration, learned_net=model_name, current_step=current_step)
        train, *tests = data_positions(nets)
        positions = [train, *(tests if tests_at is None else tests_at)]
        randoms = resume.random_states(device)
        prefix = Path(absolute(self.param.snapshot_prefix, self.folder))
        keep, final = self.keep, self.param.max_iter

        def write() -> None:
            proto = net_to_proto(net, blobs)
            model_bytes = proto.SerializeToString()
            write_atomic(model_path, model_bytes)
            for h in history:
                array_to_blob(h.numpy(), state.history.add())
            state_bytes = state.SerializeToString()
            resume.write_sidecar(resume.sidecar_path(state_path), iteration, model_name, model_bytes, state_bytes,
                                 positions, randoms)
            write_atomic(state_path, state_bytes)
            if after is not None:
                after()
            prune(prefix, keep, iteration, final)

        self._writer.submit(write)
        self.log.info(f"Snapshotting to binary proto file {model_name}", "solver.cpp:581")
        self.log.info(f"Snapshotting solver state to binary proto file {state_name}", "sgd_solver.cpp:273")
        self.log.record(kind="snapshot", iter=iteration, caffemodel=str(model_path), solverstate=str(state_path))
        return state_path

    def wait(self) -> None:
        """Block until the snapshot in flight is on disk; raise its writer's error if it failed."""
        self._writer.wait()


class Restored(NamedTuple):
    """What a restore sets on the solver: Caffe's iteration and lr step, and what the load of
    the snapshot's weights filled (replicate.net.copy_check.WeightsLoad.record; None when the
    solverstate names no learned net)."""

    iter: int
    current_step: int
    weights: dict[str, Any] | None


def restore(
    state_path: Path, nets: Sequence[CompiledNet], history: Sequence[torch.Tensor], device: torch.device,
    log: RunLog, allow_missing: frozenset[str] = frozenset(),
) -> Restored:
    """Caffe's RestoreSolverStateFromBinaryProto: the weights into the train net `nets[0]`, the
    update `history` in place, and the iteration and lr step returned; then the resume sidecar
    when there is one: every net's data positions and the random streams.  The snapshot's
    caffemodel must fill every learnable layer (ours always does; one that does not belongs to
    another net) unless `allow_missing` accepts the missing ones."""
    train_net = nets[0]
    try:
        state_bytes = state_path.read_bytes()
    except OSError as err:
        raise ReplicateError(f"{state_path}: cannot read ({err.strerror})") from None
    refuse_hdf5(state_path, state_bytes)
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(state_bytes)
    except DecodeError as err:
        if _is_weights(state_bytes):
            raise ReplicateError(weights_not_state(state_path)) from None
        raise ReplicateError(f"{state_path}: not a valid binary SolverState ({err})") from None
    if len(state.history) != len(history):
        if _is_weights(state_bytes):
            raise ReplicateError(weights_not_state(state_path))
        raise ReplicateError(
            f"{state_path}: holds {len(state.history)} history blobs; this solver needs {len(history)}"
        )
    sidecar = resume.read_sidecar(resume.sidecar_path(state_path))
    learned, weights = None, None
    if state.learned_net:
        learned = Path(state.learned_net)
        if not learned.is_absolute() and not learned.is_file():
            learned = state_path.parent / learned.name
        if not learned.is_file():
            raise ReplicateError(f"{state_path}: its learned net {state.learned_net} does not exist")
        if sidecar is not None:
            resume.check_belongs(sidecar, resume.sidecar_path(state_path), state.iter, state_bytes,
                                 learned, learned.read_bytes())
        layers = learnable_layers(train_net)
        load = WeightsLoad(layers, layers, allow_missing, "resume")
        source = load_caffemodel(learned)
        load.add(str(learned), copy_trained_layers(train_net.layer_blobs(), source).copied, source)
        load.finish()
        for line in load.lines():
            log.info(line, "weights.py:0")
        weights = load.record()
    for h, blob in zip(history, state.history):
        values = blob_to_array(blob)
        if values.size != h.numel():
            raise ReplicateError(f"{state_path}: a history blob has {values.size} values, expected {h.numel()}")
        h.copy_(torch.from_numpy(values.reshape(h.shape)))
    restored = Restored(state.iter, state.current_step, weights)
    log.info(f"Restored solver state from {state_path} at iteration {restored.iter}")
    if sidecar is None or learned is None:
        log.info(
            f"{state_path.name} has no resume sidecar (a snapshot of Caffe's): as in Caffe, the data layers "
            "restart at their first record and the random streams are not restored"
        )
        return restored
    _restore_sidecar(sidecar, resume.sidecar_path(state_path), nets, device, log)
    return restored


def _restore_sidecar(sidecar: dict[str, Any], path: Path, nets: Sequence[CompiledNet], device: torch.device,
                     log: RunLog) -> None:
    """Continue every data layer of `nets` where it stood and every random stream where it was."""
    positions = sidecar["data"]
    layers = [data_layers([net]) for net in nets]
    saved = [[p["layer"] for p in net] for net in positions]
    ours = [[layer.name for layer in net] for net in layers]
    if saved != ours:
        raise ReplicateError(f"{path}: records data layers {saved}, this solver's nets have {ours}")
    for net_layers, net_positions in zip(layers, positions):
        for layer, position in zip(net_layers, net_positions):
            layer.seek(position)
    note = resume.restore_random_states(sidecar["random"], device)
    train = ", ".join(f"{p['layer']} at batch {p['batch']}" for p in positions[0]) or "none"
    log.info(f"Resumed data layers ({train}) and random streams from {path.name}")
    if note:
        log.info(note)
