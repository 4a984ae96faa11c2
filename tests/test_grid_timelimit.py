"""`grid submit --time auto`: a job array's time limit from its nets' measured speed (their own
train.log, else a `bench` JSON), with a margin, within the partition's MaxTime."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from replicate.errors import ReplicateError
from replicate.experiments.planfile import read_plan
from replicate.experiments.timelimit import (SLURM_CHECK_S, STARTUP_MIN, TimeLimits, bench_speed, logged_seconds_per_iter,
                                             net_work, seconds_left, slurm_minutes)

NET = """name: "n"
layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  data_param {{ source: "train_lmdb" batch_size: {train} }} }}
layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  data_param {{ source: "val_lmdb" batch_size: {test} }} }}
"""
SOLVER = """net: "net.prototxt"
test_iter: {test_iter}
test_interval: {test_interval}
base_lr: 0.01
max_iter: {max_iter}
iter_size: {iter_size}
snapshot_prefix: "snap"
"""


def _plan(tmp_path: Path, nets: dict[str, dict]) -> Path:
    """One net folder per entry: a solver and a net with TRAIN and TEST Data layers."""
    entries = []
    for name, spec in nets.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "net.prototxt").write_text(NET.format(train=spec.get("train", 256), test=spec.get("test", 50)))
        (folder / "solver.prototxt").write_text(SOLVER.format(
            test_iter=spec.get("test_iter", 1000), test_interval=spec.get("test_interval", 1000),
            max_iter=spec["max_iter"], iter_size=spec.get("iter_size", 1)))
        entries.append({"name": name, "dir": name, "solver": "solver.prototxt", "depends_on": None,
                        "max_iter": spec["max_iter"], "weights": None})
    (tmp_path / "plan.json").write_text(json.dumps({"version": 1, "nets": entries}))
    return tmp_path / "plan.json"


def _bench(tmp_path: Path, end_to_end: float | None, step: float = 9000.0, test: float | None = None) -> Path:
    report = {"device_name": "NVIDIA H200",
              "step": [{"precision": "fp32", "channels_last": False, "compile": False, "images_per_s": step},
                       {"precision": "fp32", "channels_last": True, "compile": False, "images_per_s": 99999.0}],
              "end_to_end": [] if end_to_end is None else [
                  {"precision": "fp32", "channels_last": False, "compile": False, "images_per_s": end_to_end}],
              "test_pass": [] if test is None else [{"precision": "fp32", "images_per_s": test}]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(report))
    return path


def _display(it: int, lapse: float, every: int = 20) -> str:
    return (f"I1204 10:00:00.000000 1 solver.cpp:231] Iteration {it} ({every / lapse:.4g} iter/s, "
            f"{lapse:.4g}s/{every} iters), loss = 6.9\n")


def test_slurm_time_formats() -> None:
    assert [slurm_minutes(t) for t in ("2-00:00:00", "12:00:00", "90:30", "45", "infinite", "UNLIMITED")] == [
        2880, 720, 90, 45, None, None]


def test_a_started_net_is_timed_by_its_own_latest_run(tmp_path: Path) -> None:
    plan = read_plan(_plan(tmp_path, {"a": {"max_iter": 10000}}))
    net = plan.net("a")
    assert logged_seconds_per_iter(net.dir) is None
    # An older run at 1 s per 20 iterations, then the latest one (started over) at 2 s.
    (net.dir / "train.log").write_text("".join([_display(i, 1.0) for i in (20, 40, 60)]
                                               + [_display(i, 2.0) for i in (20, 40)]))
    (net.dir / "metrics.jsonl").write_text('{"kind": "train", "iter": 40}\n')
    assert logged_seconds_per_iter(net.dir) == pytest.approx(0.1)
    seconds, how = seconds_left(net, None)
    assert seconds == pytest.approx((10000 - 40) * 0.1) and "from its train.log" in how
    minutes, why = TimeLimits(None, None, margin=1.5)(plan.nets)
    assert minutes == math.ceil(9960 * 0.1 * 1.5 / 60) + STARTUP_MIN and why.startswith(f"{minutes} min for a")


def test_a_fresh_net_is_timed_from_bench_with_its_tests(tmp_path: Path) -> None:
    # The paper's net: 450,000 iterations of 256 images, a test pass of 1000 x 50 every 1000.
    plan = read_plan(_plan(tmp_path, {"paper": {"max_iter": 450000}, "short": {"max_iter": 1000, "iter_size": 2}}))
    assert net_work(plan.net("paper")).__dict__ == {"train_images": 256, "test_images": 50000, "test_interval": 1000}
    assert net_work(plan.net("short")).train_images == 512
    bench = bench_speed(_bench(tmp_path, end_to_end=7478.0, test=20000.0))
    assert (bench.train, bench.test) == (7478.0, 20000.0) and "end to end" in bench.source
    seconds, _ = seconds_left(plan.net("paper"), bench)
    assert seconds == pytest.approx(450000 * 256 / 7478 + 450 * 50000 / 20000)
    minutes, why = TimeLimits(None, None, bench=bench)(plan.nets)
    assert minutes == math.ceil(seconds * 1.25 / 60) + STARTUP_MIN and "for paper" in why
    # No end-to-end figure: the synthetic step's (plain setting), and tests at the training rate.
    fallback = bench_speed(_bench(tmp_path, end_to_end=None))
    assert (fallback.train, fallback.test) == (9000.0, 9000.0) and "synthetic step" in fallback.source
    with pytest.raises(ReplicateError, match="no bf16 step"):
        bench_speed(tmp_path / "bench.json", "bf16")


def test_a_need_beyond_the_partition_is_capped_and_carried_on_by_requeues(tmp_path: Path) -> None:
    plan = read_plan(_plan(tmp_path, {"paper": {"max_iter": 450000}}))
    bench = bench_speed(_bench(tmp_path, end_to_end=1000.0))  # ~38 h (48 with the margin): 2 jobs of 24 h
    minutes, why = TimeLimits(None, 1440, bench=bench)(plan.nets)
    assert minutes == 1440 and why.endswith("capped at the partition's MaxTime: ~1 requeue(s)"), why
    with pytest.raises(ReplicateError, match="more than --max-requeues 0"):
        TimeLimits(None, 1440, bench=bench, max_requeues=0)(plan.nets)
    assert TimeLimits(4320, 1440)(plan.nets) == (1440, "1440 min (the partition's MaxTime; asked 4320)")
    assert TimeLimits(60, None)(plan.nets) == (60, "60 min")


def test_a_fixed_time_checks_the_requeues_of_the_nets_whose_speed_is_known(tmp_path: Path) -> None:
    """--time 60 for a net that needs hours: each job trains until SLURM's signal and requeues;
    past --max-requeues the job fails and its dependants are cancelled, so it is said at submit."""
    plan = read_plan(_plan(tmp_path, {"a": {"max_iter": 10000}, "fresh": {"max_iter": 10000}}))
    net = plan.net("a")
    (net.dir / "train.log").write_text("".join(_display(i, 2.0) for i in (20, 40)))  # 0.1 s/iteration
    (net.dir / "metrics.jsonl").write_text('{"kind": "train", "iter": 40}\n')
    need = math.ceil(9960 * 0.1 * 1.25 / 60) + STARTUP_MIN
    assert TimeLimits(need, None)(plan.nets) == (need, f"{need} min")  # enough: nothing to add
    minutes, why = TimeLimits(5, None, signal_delay_s=30)(plan.nets)
    requeues = math.ceil(need * 60 / (5 * 60 - 30 - SLURM_CHECK_S)) - 1
    assert (minutes, why) == (5, f"5 min: ~{requeues} requeue(s) for a")
    with pytest.raises(ReplicateError, match=rf"a needs ~{need} min but --time is 5: ~{requeues} requeues, more "
                                             "than --max-requeues 2"):
        TimeLimits(5, None, signal_delay_s=30, max_requeues=2)(plan.nets)
    assert TimeLimits(5, None, signal_delay_s=30, max_requeues=2)([plan.net("fresh")]) == (5, "5 min")  # unknown speed
