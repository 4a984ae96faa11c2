"""Data parallelism over processes (torchrun): one global batch, one gradient, one schedule.

Every process builds the same net from the same seed; its Data layers read their 1/N slice of
each global batch (replicate.data.loader.BatchMaker's shard).  A loss normalised by the local
batch (SoftmaxWithLoss) gives each process (1/b) * sum of its slice's terms; averaging those
gradients over the N processes gives (1/(N*b)) * sum over the whole batch, the gradient one
process computes on the global batch.  The averaging overlaps the backward pass
(`GradientAverager`).  Losses and test outputs are averaged the same way, so the
log of rank 0 (the only one that logs and snapshots) reads like a single-process run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from replicate.errors import ReplicateError
from replicate.layers.softmax_with_loss import normalization_mode
from replicate.proto import caffe_pb2
from replicate.solver.requests import REQUEUE, SNAPSHOT, STOP

_Norm = caffe_pb2.LossParameter


@dataclass(frozen=True)
class Group:
    """This process's place in a data-parallel run; rank 0 of world 1 is a plain run."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the processes (one flat all-reduce)."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Make every process hold rank 0's values (weights copied or initialised there)."""
        if self.world == 1:
            return
        for t in tensors:
            dist.broadcast(t, src=0)

    def shared_seed(self, seed: int) -> int:
        """Rank 0's seed on every process (a solver without random_seed draws one per process)."""
        if self.world == 1:
            return seed
        value = torch.tensor([seed], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            value = value.cuda()
        dist.broadcast(value, src=0)
        return int(value.item())


def union_over(group: Group) -> Callable[[set[str]], set[str]]:
    """A function that pools a set of names (signal requests) over the processes: each gets the
    union of every process's set.  It runs one 4-byte-per-name all-reduce on a CPU (gloo) group,
    so pooling after every iteration does not wait for the GPU.  Call it on every process at the
    same point (it creates a process group)."""
    control = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    names = (REQUEUE, STOP, SNAPSHOT)

    def union(chosen: set[str]) -> set[str]:
        flags = torch.tensor([name in chosen for name in names], dtype=torch.int32)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=control)
        return {name for name, flag in zip(names, flags.tolist()) if flag}

    return union


class GradientAverager:
    """Averages the gradients of `params` over the processes while backward still runs.

    Each parameter's all-reduce starts the moment autograd has accumulated its gradient (a
    post-accumulate-grad hook; the top layers' gradients come first), so the communication of
    the upper layers hides behind the backward of the lower ones, as DistributedDataParallel
    does.  Only the last of iter_size backward passes is `armed`: the gradient reduced is the
    one accumulated over all of them.  `finish` waits for every reduction and divides by the
    number of processes; a parameter the loss did not reach gets a zero gradient, as in Caffe.
    """

    def __init__(self, group: Group, params: Sequence[torch.Tensor]):
        self.group = group
        self.params = [p for p in params if p.requires_grad]
        self.armed = False
        self._pending: list[tuple[torch.Tensor, dist.Work]] = []
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._reduce)

    def _reduce(self, param: torch.Tensor) -> None:
        if self.armed:
            self._pending.append((param, dist.all_reduce(param.grad, op=dist.ReduceOp.SUM, async_op=True)))

    def finish(self) -> None:
        self.armed = False
        pending, self._pending = self._pending, []
        for param, work in pending:
            work.wait()
            param.grad.div_(self.group.world)
        for param in self.params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)


def check_averageable(net: caffe_pb2.NetParameter, where: str) -> None:
    """Averaging per-process gradients equals the whole batch's gradient only when every loss is
    a mean over the batch with the same divisor in each process and no layer mixes images of the
    batch: a summed SoftmaxWithLoss (normalization NONE), one divided by a per-process count of
    valid labels (VALID with ignore_label), or BatchNorm (statistics of a slice, not the batch)
    would train differently from one process, so such a net stops here."""
    for layer in net.layer:
        if layer.type == "BatchNorm":
            raise ReplicateError(
                f"{where}: layer '{layer.name}' (BatchNorm) would use each process's slice of the batch "
                "for its statistics; data-parallel training would not match one process"
            )
        if layer.type != "SoftmaxWithLoss":
            continue
        mode = normalization_mode(layer.loss_param)
        ignore = layer.loss_param.HasField("ignore_label")
        if mode == _Norm.NONE or (ignore and mode == _Norm.VALID):
            setting = "normalization NONE" if mode == _Norm.NONE else "ignore_label with VALID normalization"
            raise ReplicateError(
                f"{where}: layer '{layer.name}' uses {setting}; data-parallel training would not match "
                "one process (use BATCH_SIZE normalization, or train in one process)"
            )


def join(device: str | None) -> tuple[Group, str | None]:
    """Join the torchrun group named by the environment (WORLD_SIZE > 1), if any.

    Returns the group and the device this process should use: cuda:LOCAL_RANK with NCCL when
    CUDA is here (and --device is not cpu), else CPU with gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group(), device
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        raise ReplicateError("--device cuda was asked for but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        _import_world_defaults()
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Group(dist.get_rank(), dist.get_world_size()), device


def _import_world_defaults() -> None:
    """Import, before the group exists, the torch module that takes the default group as a
    default argument (`torch.distributed.nn.functional`: `group=group.WORLD`, evaluated once, at
    import).  torch.compile imports it; imported after `init_process_group`, its defaults would
    hold the group after `destroy_process_group`, so the group's gloo threads and store server
    would live on until the interpreter's teardown, where destroying them can abort the process
    (SIGABRT, "terminate called without an active exception") after training has finished."""
    import torch.distributed.nn.functional  # noqa: F401


def leave(group: Group) -> None:
    """End the group `join` started, so that its threads (and rank 0's store server) stop with
    the run, not in the interpreter's teardown."""
    if group.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
