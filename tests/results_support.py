"""Realistic Caffe logs for the results tests, made from the authors' real validation curves.

results/original_curves.csv.gz holds every validation point of the authors' 148 logs
(copied from the paper's public release; 6 significant digits, as Caffe printed them).  The
writers below put those real numbers into the exact line formats of 2014 Caffe (solver.cpp of April 2014: `Iteration N, Testing net`,
`Test score #0/#1`, `Iteration N, lr`, `Iteration N, loss`) and of modern Caffe (as in
tests/golden/caffe_train_e2e/caffe/train.log).  Training losses are not in the release: they
are drawn near the validation loss, which no statistic uses.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

from replicate.results.reference import load_paper_curves

REFERENCE = Path(__file__).parent.parent / "results" / "paper_reference.csv"


def load_curves() -> dict[str, list[tuple[int, str, str]]]:
    """name -> [(iter, top1 text, loss text)], the numbers spelled as Caffe's glog printed them."""
    return {name: [(p.iter, f"{p.top1:g}", f"{p.loss:g}") for p in points]
            for name, points in load_paper_curves().items()}


class _Log:
    """glog lines: severity and date, a clock that advances with the line count, thread id."""

    def __init__(self, date: str) -> None:
        self.date = date
        self.lines: list[str] = []

    def emit(self, where: str, msg: str) -> None:
        i = len(self.lines) + 1
        seconds = 20 * 3600 + i // 40
        clock = f"{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        self.lines.append(f"I{self.date} {clock}.{(i * 7919) % 1000000:06d}  8087 {where}] {msg}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def log_2014(name: str, points: list[tuple[int, str, str]], display: int = 20,
             max_iter: int | None = None, date: str = "0418", start: int = 0,
             last: int | None = None) -> str:
    """A 2014 Caffe log of one net with these validation points: a job started on `date`
    (MMDD) from the snapshot at iteration `start` (0: from scratch) and killed after iteration
    `last` (None: it runs to the end)."""
    rng = random.Random(name)
    emit = (log := _Log(date)).emit
    emit("train_net.cpp:26", "Starting Optimization")
    emit("solver.cpp:41", "Creating training net.")
    emit("net.cpp:75", "Creating Layer data")
    emit("net.cpp:111", "data -> data")
    emit("net.cpp:111", "data -> label")
    emit("data_layer.cpp:145", f"Opening leveldb /data/{name}_train_leveldb")
    emit("data_layer.cpp:185", "output data size: 256,3,227,227")
    emit("net.cpp:126", "Top shape: 256 3 227 227 (39574272)")
    emit("net.cpp:75", "Creating Layer conv1")
    emit("net.cpp:126", "Top shape: 256 96 55 55 (74342400)")
    emit("net.cpp:154", "conv1 needs backward computation.")
    emit("solver.cpp:44", "Creating testing net.")
    emit("net.cpp:165", "This network produces output accuracy")
    emit("solver.cpp:47", "Solver scaffolding done.")
    emit("solver.cpp:57", "Solving CaffeNet")
    tests = {it: (top1, loss) for it, top1, loss in points}
    end = max_iter or points[-1][0]
    base_loss = float(points[0][2])
    for it in range(start + 1, (last or end) + 1):
        if it % display == 0:
            emit("solver.cpp:218", f"Iteration {it}, lr = {0.01 * 0.1 ** (it // 100000):g}")
            emit("solver.cpp:75", f"Iteration {it}, loss = {base_loss * rng.uniform(0.5, 1.0):g}")
        if it in tests:
            emit("solver.cpp:96", f"Iteration {it}, Testing net")
            emit("solver.cpp:123", f"Test score #0: {tests[it][0]}")
            emit("solver.cpp:123", f"Test score #1: {tests[it][1]}")
        if it % 10000 == 0:
            emit("solver.cpp:140", f"Snapshotting to caffe_imagenet_train_iter_{it}")
            emit("solver.cpp:147",
                 f"Snapshotting solver state to caffe_imagenet_train_iter_{it}.solverstate")
    if last is None:
        emit("solver.cpp:140", f"Snapshotting to caffe_imagenet_train_iter_{end}")
        emit("solver.cpp:91", "Optimization Done.")
    return log.text()


def log_modern(points: list[tuple[int, float, float | None]], display: int = 20,
               initial: tuple[float, float | None] | None = (0.001, 6.9),
               date: str = "1124") -> str:
    """A modern Caffe log (test at iteration 0 when `initial` is given), started on `date`."""
    emit = (log := _Log(date)).emit
    def test(it: int, top1: float, loss: float | None) -> None:
        emit("solver.cpp:346", f"Iteration {it}, Testing net (#0)")
        emit("solver.cpp:413", f"    Test net output #0: accuracy = {top1:g}")
        if loss is not None:
            emit("solver.cpp:413", f"    Test net output #1: loss = {loss:g} (* 1 = {loss:g} loss)")

    emit("solver.cpp:51", "Initializing solver from parameters: ")
    emit("solver.cpp:282", "Solving CaffeNet")
    emit("solver.cpp:283", "Learning Rate Policy: step")
    if initial is not None:
        test(0, *initial)
    tests = {it: (t, l) for it, t, l in points}
    for it in range(0, points[-1][0]):
        if it and it in tests:
            test(it, *tests[it])
        if it % display == 0:
            emit("solver.cpp:231", f"Iteration {it} (12.5 iter/s, 1.6s/20 iters), loss = 2.5")
            emit("solver.cpp:247", "    Train net output #0: loss = 2.5 (* 1 = 2.5 loss)")
            emit("sgd_solver.cpp:106", f"Iteration {it}, lr = 0.01")
    last = points[-1][0]
    emit("solver.cpp:581", f"Snapshotting to binary proto file snap_iter_{last}.caffemodel")
    emit("solver.cpp:311", f"Iteration {last}, loss = 2.4")
    test(last, *tests[last])
    emit("solver.cpp:316", "Optimization Done.")
    return log.text()


def write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    return path
