"""Data parallel training (two gloo processes on CPU) matches one process on the whole batch.

The union of the ranks' Data-layer slices must be the single-process batch (same records, same
random crops and mirrors, even for JPEGs of different sizes), and averaging the per-rank
gradients must give the single-process gradient: after a few SGD iterations with momentum and
weight decay the weights agree within float tolerance.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from gpu_support import (
    dataset, free_port, holds_a_process_group, metrics, one_process_group, run_dir, thread_names, train_rank,
    weights,
)

from replicate.data.loader import BatchMaker
from replicate.data.sources import LmdbSource
from replicate.data.transform import TRAIN, DataTransformer
from replicate.errors import ReplicateError
from replicate.io.prototxt import parse_text
from replicate.proto import caffe_pb2
from replicate.solver.distributed import check_averageable


def test_shards_of_a_batch_together_are_the_single_process_batch(tmp_path: Path) -> None:
    dataset(tmp_path)
    param = caffe_pb2.TransformationParameter(crop_size=8, mirror=True)

    def maker(shard):
        return BatchMaker(LmdbSource(tmp_path / "db"), DataTransformer(param, TRAIN), 6, seed=7, shard=shard)

    for k in range(3):
        whole, labels = maker((0, 1)).make(k)
        parts = [maker((r, 3)).make(k) for r in range(3)]
        assert torch.equal(torch.cat([p[0] for p in parts]), whole)
        assert torch.equal(torch.cat([p[1] for p in parts]), labels)


CASES = [("", False), ("iter_size: 2", False), ("", "aot_eager")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool | str], tuple[Path, Path]]:
    """Each case trained in one process and by two gloo processes; the two ranks are started
    once for all cases (their start-up is most of the cost)."""
    from replicate.solver.run import train

    folders = {}
    for solver_extra, compile in CASES:
        root = tmp_path_factory.mktemp("ddp")
        single, double = run_dir(root / "single", solver_extra), run_dir(root / "ddp", solver_extra)
        train(single, device="cpu", echo=False)
        folders[(solver_extra, compile)] = (single, double)
    runs = [(free_port(), str(double), compile) for (_, compile), (_, double) in folders.items()]
    mp.start_processes(train_rank, args=(2, runs), nprocs=2, start_method="spawn")
    return folders


@pytest.mark.parametrize(("solver_extra", "compile"), CASES)
def test_two_processes_train_like_one(trained: dict, solver_extra: str, compile: bool | str) -> None:
    """Gradients averaged while backward runs (and, with iter_size 2, over both passes; and
    through a torch.compile'd net) give one process's update on the whole batch."""
    single, double = trained[(solver_extra, compile)]
    one, two = weights(single.parent / "snap_iter_4.caffemodel"), weights(double.parent / "snap_iter_4.caffemodel")
    assert one.keys() == two.keys() == {"conv", "fc"}
    for name in one:
        for a, b in zip(one[name], two[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    m1, m2 = metrics(single.parent), metrics(double.parent)
    assert m2[0]["kind"] == "config" and m2[0]["world_size"] == 2 and m2[0]["precision"] == "fp32"
    loss1 = [m["loss"] for m in m1 if m["kind"] == "train"]
    loss2 = [m["loss"] for m in m2 if m["kind"] == "train"]
    np.testing.assert_allclose(loss1, loss2, rtol=1e-5)
    test1 = [m["outputs"]["acc"] for m in m1 if m["kind"] == "test"]
    test2 = [m["outputs"]["acc"] for m in m2 if m["kind"] == "test"]
    assert test1 == test2 and len(test1) == 3
    pids = {line.split()[2] for line in (double.parent / "train.log").read_text().splitlines()}
    assert len(pids) == 1  # only rank 0 logs
    assert sum(m["kind"] == "config" for m in m2) == 1

    def logged_test_losses(folder: Path) -> list[str]:
        return [line.split("] ")[1] for line in (folder / "train.log").read_text().splitlines() if "Test loss" in line]

    assert logged_test_losses(single.parent) == logged_test_losses(double.parent)
    assert len(logged_test_losses(single.parent)) == 3


def test_a_rank_holds_no_process_group_once_its_runs_are_over(trained: dict) -> None:
    """Each run's gloo group (its threads, and rank 0's store server) ends with the run, also
    after a torch.compile'd run, whose import of torch.distributed.nn.functional would keep the
    group in that module's default arguments: left to the interpreter's teardown, destroying it
    can abort a rank that has finished (SIGABRT, seen in CI)."""
    with one_process_group():
        # The names tell a live group on this torch.  A new thread names itself once it runs,
        # which on a loaded machine can be a while after the group is up: wait for it.
        deadline = time.monotonic() + 30
        while not holds_a_process_group(thread_names()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert holds_a_process_group(thread_names()), thread_names()
    assert CASES[-1][1]  # the last run the ranks trained was compiled
    folder = trained[CASES[-1]][1].parent
    for rank in (0, 1):
        names = (folder / f"rank{rank}.threads").read_text().split()
        assert not holds_a_process_group(names), f"rank {rank} still runs {names}"


def test_nets_whose_gradient_is_not_a_batch_mean_are_refused() -> None:
    def net(extra: str) -> caffe_pb2.NetParameter:
        return parse_text(f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" {extra} }}',
                          caffe_pb2.NetParameter())

    check_averageable(net(""), "n")
    check_averageable(net("loss_param { ignore_label: 0 normalization: BATCH_SIZE }"), "n")
    with pytest.raises(ReplicateError, match="'loss' uses normalization NONE"):
        check_averageable(net("loss_param { normalization: NONE }"), "n")
    with pytest.raises(ReplicateError, match="ignore_label with VALID"):
        check_averageable(net("loss_param { ignore_label: 0 }"), "n")
    with pytest.raises(ReplicateError, match="BatchNorm"):
        check_averageable(parse_text('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }',
                                     caffe_pb2.NetParameter()), "n")


def test_gradient_averaging_starts_while_backward_runs() -> None:
    """The top layer's all-reduce is under way before the bottom layer's gradient exists."""
    from replicate.solver.distributed import GradientAverager, Group

    with one_process_group():
        bottom = torch.nn.Parameter(torch.randn(4, 3))
        top = torch.nn.Parameter(torch.randn(2, 4))
        averager = GradientAverager(Group(0, 1), [bottom, top])
        seen = []
        bottom.register_hook(lambda g: seen.append(len(averager._pending)))
        averager.armed = True
        (top @ (bottom @ torch.randn(3, 5))).sum().backward()
        assert seen == [1]  # the top layer's reduction was launched first
        averager.finish()
        assert not averager._pending and bottom.grad is not None
