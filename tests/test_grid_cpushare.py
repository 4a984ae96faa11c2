"""Trainers that `grid run` starts at once share the CPUs it may use: each sizes its data workers
and torch threads from its own share, not from every CPU (replicate.experiments.cpushare)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from grid_support import FAKE_TRAIN, invocations, make_plan
from solver_support import random_run

from replicate.cli import build_parser, main
from replicate.experiments import netstate
from replicate.data.cpus import available_cpus
from replicate.data.pool import workers_per_process
from replicate.experiments.cpushare import CpuShare, cpu_shares, split_cpus


def test_shares_are_disjoint_runs_of_the_mask_or_counts_when_the_cpus_are_unknown() -> None:
    # A 16-CPU node, 4 GPUs: 4 CPUs each, pinned, none shared.
    assert split_cpus(4, range(16), 16) == [CpuShare(4, tuple(range(i, i + 4))) for i in (0, 4, 8, 12)]
    # Uneven: the first shares get one more; the mask need not be contiguous.
    assert split_cpus(2, [3, 5, 7, 9, 11], 5) == [CpuShare(3, (3, 5, 7)), CpuShare(2, (9, 11))]
    # More trainers than CPUs: one each, round robin.
    assert split_cpus(3, [0, 1], 2) == [CpuShare(1, (0,)), CpuShare(1, (1,)), CpuShare(1, (0,))]
    # SLURM gave 10 of a 64-CPU node without binding them: which 10 is unknown, so counts only.
    assert split_cpus(4, range(64), 10) == [CpuShare(3), CpuShare(3), CpuShare(2), CpuShare(2)]
    assert split_cpus(3, None, 2) == [CpuShare(1)] * 3
    with pytest.raises(ValueError):
        split_cpus(0, range(4), 4)


def test_the_share_reaches_the_trainer_as_threads_unless_the_user_chose_them() -> None:
    share = CpuShare(3, (0, 1, 2))
    assert share.env({"A": "1"}) == {"A": "1", "REPLICATE_CPUS": "3", "OMP_NUM_THREADS": "3"}
    assert share.env({"OMP_NUM_THREADS": "1"})["OMP_NUM_THREADS"] == "1"


@pytest.fixture
def own_cpus(monkeypatch) -> list[int]:
    """This process's CPUs, with no count imposed from outside (conftest's one thread, SLURM's)."""
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "REPLICATE_CPUS"):
        monkeypatch.delenv(name, raising=False)
    return sorted(os.sched_getaffinity(0))


def _expected(mask: list[int], trainers: int) -> list[tuple[int, list[int]]]:
    """Each trainer's count and CPUs: the mask cut in `trainers` runs (one CPU each, round robin,
    when there are fewer CPUs than trainers)."""
    if len(mask) <= trainers:
        return [(1, [mask[i % len(mask)]]) for i in range(trainers)]
    size, extra = divmod(len(mask), trainers)
    out, start = [], 0
    for i in range(trainers):
        count = size + (i < extra)
        out.append((count, mask[start:start + count]))
        start += count
    return out


def test_gpu_trainers_size_workers_and_threads_from_their_own_disjoint_cpus(tmp_path: Path, own_cpus) -> None:
    # Two GPUs at once: each trainer runs on its half of the CPUs and starts the data workers and
    # torch threads that half allows (replicate's own sizing, run inside the trainer's process).
    plan = make_plan(tmp_path, [("a", None), ("b", None)], max_iter=2,
                     fake={n: {"probe_cpus": True, "step_s": 0.5} for n in "ab"})
    assert main(["grid", "run", "--plan", str(plan), "--gpus", "0,1", "--progress-every", "3600",
                 "--train-command", " ".join(FAKE_TRAIN)]) == 0
    seen = sorted((invocations(tmp_path / n)[0] for n in "ab"), key=lambda run: run["gpu"])
    for run, (count, cpus) in zip(seen, _expected(own_cpus, 2)):
        assert run["affinity"] == cpus and run["cpus"] == str(count), run
        assert run["torch_threads"] == count and run["omp_threads"] == str(count), run
        assert run["data_workers"] == max(1, count - 1), run
    spans = sorted((run["start"], run["end"]) for run in seen)
    assert spans[1][0] < spans[0][1]  # the two shared the CPUs at the same time
    records = sorted((netstate.read_status(tmp_path / n)["cpus"] for n in "ab"), key=lambda r: r["cpus"])
    assert [(r["count"], r["cpus"]) for r in records] == _expected(own_cpus, 2)


def test_a_slurm_count_without_bound_cpus_gives_unpinned_shares_of_that_count(own_cpus, monkeypatch) -> None:
    # SLURM allocated 1 CPU without binding it (task/none): the one trainer keeps the mask and
    # sizes itself from one CPU, not from every CPU of the node; a trainer given a share counts it.
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cpu_shares(1) == [CpuShare(1, None if len(own_cpus) > 1 else tuple(own_cpus))]
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setenv("REPLICATE_CPUS", "1")
    assert available_cpus() == 1 and workers_per_process() == 1


def test_cpu_jobs_train_with_their_share_of_threads(tmp_path: Path, own_cpus) -> None:
    # The real trainer (forked from the preloaded server, whose torch was imported before the
    # share was known) records the threads it trained with.
    nets = []
    for name in ("a", "b"):
        random_run(tmp_path, name, {"max_iter: 14": "max_iter: 2"})
        (tmp_path / name / "manifest.json").write_text(json.dumps({"name": name}))
        nets.append({"name": name, "dir": name, "solver": "solver.prototxt", "depends_on": None, "max_iter": 2,
                     "weights": None})
    (tmp_path / "plan.json").write_text(json.dumps({"version": 1, "nets": nets}))
    assert main(["grid", "run", "--plan", str(tmp_path / "plan.json"), "--device", "cpu", "--jobs", "2"]) == 0
    for name in ("a", "b"):
        config = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])
        share = netstate.read_status(tmp_path / name)["cpus"]
        assert config["kind"] == "config" and config["cpu_threads"] == share["count"], (config, share)
    counts = sorted(netstate.read_status(tmp_path / n)["cpus"]["count"] for n in "ab")
    assert counts == sorted(count for count, _ in _expected(own_cpus, 2))


@pytest.mark.parametrize("argv, option", [
    (["demo"], "jobs"), (["data", "convert", "--list", "l", "--root", "r", "--out", "o"], "workers")])
def test_pool_sizes_default_to_the_cpus_this_process_may_use(monkeypatch, argv: list[str], option: str) -> None:
    # os.cpu_count() counts the whole node: under SLURM or taskset it would start a job per core
    # of the machine on the few this process was given.
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    args = build_parser(argv).parse_args(argv)
    assert getattr(args, option) == available_cpus() == 1
