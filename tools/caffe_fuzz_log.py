"""Random solvers trained on the e2e case by real Caffe and by `replicate train`, their logs
compared line by line: the measurement docs/fidelity.md quotes.

Each case is tests/golden/caffe_train_e2e (its nets, LMDBs and starting weights) with a random
solver: 0-2 test nets (each over its own copy of the val LMDB: LMDB refuses one environment
opened twice in a process, and Caffe hangs there), test_iter, test_interval, test_initialization,
test_compute_loss, every lr policy, momentum, display, average_loss, iter_size, clip_gradients,
max_iter.  Caffe trains through pycaffe (`get_solver`, `net.copy_from`, `solve`: this build's
`caffe train` ignores -weights and its solver has no `weights`); ours through
`python -m replicate train solver.prototxt --weights init.caffemodel`.  Compared: the solver's log
lines (losses, smoothed losses, rates, test outputs, MultiStep steps, gradient clipping), without
timings and set-up lines.  A number that differs only in the last of the 6 digits both print is
counted as print rounding.

  .venv/bin/python tools/caffe_fuzz_log.py <caffe>/python OUT 0 100
  .venv/bin/python tools/caffe_fuzz_log.py <caffe>/python OUT 7 1 --golden tests/golden/caffe_train_e2e/logs
"""

from __future__ import annotations

import argparse
import difflib
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from solver_support import E2E, masked_values, solver_lines, within_last_digit  # noqa: E402

CAFFE_RUN = ("import caffe\ncaffe.set_mode_cpu()\nsolver = caffe.get_solver('solver.prototxt')\n"
             "solver.net.copy_from('init.caffemodel')\nsolver.solve()\n")


def solver_text(rng: random.Random) -> str:
    policy = rng.choice(["fixed", "step", "multistep", "inv", "poly", "exp", "sigmoid"])
    tests = rng.choice([0, 1, 1, 2])
    lines = ['train_net: "train.prototxt"'] + [f'test_net: "val{i}.prototxt"' for i in range(tests)]
    lines += [f"test_iter: {rng.randint(1, 4)}" for _ in range(tests)]
    if tests:
        lines.append(f"test_interval: {rng.randint(1, 7)}")
        if rng.random() < 0.4:
            lines.append(f"test_initialization: {rng.choice(['true', 'false'])}")
        if rng.random() < 0.3:
            lines.append("test_compute_loss: true")
    lines += [f"base_lr: {rng.choice([0.01, 0.05, 0.02])}", f'lr_policy: "{policy}"']
    if policy in ("step", "multistep", "inv", "exp", "sigmoid"):
        lines.append(f"gamma: {rng.choice([0.5, 0.1, 0.9])}")
    if policy in ("step", "sigmoid"):
        lines.append(f"stepsize: {rng.randint(1, 5)}")
    if policy == "multistep":
        lines += [f"stepvalue: {v}" for v in sorted(rng.sample(range(1, 12), 2))]
    if policy in ("inv", "poly"):
        lines.append(f"power: {rng.choice([0.75, 1.0, 2.0])}")
    lines += [f"momentum: {rng.choice([0, 0.9])}", "weight_decay: 0.005",
              f"display: {rng.choice([0, 1, 2, 3, 5])}", f"max_iter: {rng.randint(1, 12)}"]
    if rng.random() < 0.6:
        lines.append(f"average_loss: {rng.randint(1, 5)}")
    if rng.random() < 0.4:
        lines.append(f"iter_size: {rng.randint(1, 3)}")
    if rng.random() < 0.2:
        lines.append(f"clip_gradients: {rng.choice([0.1, 1.0])}")
    lines += ["snapshot_after_train: false", 'snapshot_prefix: "snap"', "solver_mode: CPU"]
    return "\n".join(lines) + "\n"


def make_case(folder: Path, solver: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(E2E, folder, ignore=shutil.ignore_patterns("caffe", "logs", "README.md"))
    for i in range(2):
        shutil.copytree(folder / "val_lmdb", folder / f"val{i}_lmdb")
        text = (folder / "val.prototxt").read_text().replace('"val_lmdb"', f'"val{i}_lmdb"')
        (folder / f"val{i}.prototxt").write_text(text)
    (folder / "solver.prototxt").write_text(solver)


def run_caffe(folder: Path, caffe_python: Path) -> tuple[int, str]:
    (folder / "run_caffe.py").write_text(CAFFE_RUN)
    done = subprocess.run(["/usr/bin/python3", "run_caffe.py"], cwd=folder, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(caffe_python), "PATH": "/usr/bin:/bin"})
    return done.returncode, done.stderr


def run_ours(folder: Path) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "replicate", "train", "solver.prototxt", "--weights",
                           "init.caffemodel"], cwd=folder, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def same_to_print_rounding(ours: list[str], theirs: list[str]) -> bool:
    """The same lines but for numbers one unit apart in the last printed digit."""
    (shape, values), (caffe_shape, caffe_values) = masked_values(ours), masked_values(theirs)
    return shape == caffe_shape and all(within_last_digit(a, b) for a, b in zip(values, caffe_values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("caffe_python", type=Path, help="pycaffe's folder (<caffe>/python)")
    parser.add_argument("out", type=Path, help="where the cases are trained")
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--golden", type=Path, help="keep each case's solver and Caffe's log lines here")
    args = parser.parse_args()
    tally: Counter[str] = Counter()
    for seed in range(args.first, args.first + args.count):
        folder = args.out / f"log{seed:04d}"
        make_case(folder, solver_text(random.Random(seed)))
        caffe_rc, caffe_log = run_caffe(folder, args.caffe_python)
        ours_rc, ours_log = run_ours(folder)
        theirs, ours = solver_lines(caffe_log), solver_lines(ours_log)
        if caffe_rc or ours_rc:
            outcome = "refused by both" if caffe_rc and ours_rc else "REFUSED BY ONE"
        elif ours == theirs:
            outcome = "identical"
        elif same_to_print_rounding(ours, theirs):
            outcome = "identical but for print rounding"
        else:
            outcome = "DIFFERENT"
        tally[outcome] += 1
        if outcome.isupper():
            print(f"seed {seed}: {outcome} (Caffe {caffe_rc}, ours {ours_rc})")
            print("\n".join(list(difflib.unified_diff(theirs, ours, "caffe", "ours", n=1, lineterm=""))[:30]))
        if args.golden:
            case = args.golden / f"log{seed:04d}"
            case.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / "solver.prototxt", case / "solver.prototxt")
            (case / "caffe.log").write_text("\n".join(theirs) + "\n")
    print(dict(sorted(tally.items())))
    return 1 if any(key.isupper() for key in tally) else 0


if __name__ == "__main__":
    raise SystemExit(main())
