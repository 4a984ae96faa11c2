"""Resume on a GPU: how far a run resumed from a snapshot ends from the run never stopped.

On the CPU the tests prove a resumed run bit-identical (tests/test_solver_resume.py).  On a GPU the
same data positions and random streams (the CUDA generator included) are restored, but cuDNN's
autotuned kernels need not repeat their arithmetic bit for bit even in a run never stopped; this
prints, for the tests' net with crops, mirrors and dropout on `--device`, the largest difference
between an uninterrupted run's final weights and each resumed run's, and between two uninterrupted
runs (the floor set by the kernels themselves).

  python benchmarks/gpu_resume.py --device cuda --out gpu_session_out/resume.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from solver_support import params, random_run  # noqa: E402  (the tests' fixture net)

from replicate.solver.run import train  # noqa: E402

SEEDED = {"stepsize: 8": "stepsize: 8\nrandom_seed: 5", "solver_mode: CPU": "solver_mode: GPU"}


def _max_diff(a: Path, b: Path) -> float:
    pa, pb = params(a), params(b)
    return max(float(np.max(np.abs(x - y))) for k in pa for x, y in zip(pa[k], pb[k]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gpu_resume_"))
    runs = []
    for name in ("whole", "again"):
        run = random_run(root, name, SEEDED)
        train(run / "solver.prototxt", device=args.device, echo=False)
        runs.append(run)
    final = "snap_iter_14.caffemodel"
    report = {"device": args.device, "uninterrupted_vs_uninterrupted": _max_diff(runs[0] / final, runs[1] / final)}
    for at in (3, 6, 9, 12):
        run = root / f"from{at}"
        shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns("train.log", "metrics.jsonl", "*_iter_14.*"))
        train(run / "solver.prototxt", snapshot=run / f"snap_iter_{at}.solverstate", device=args.device, echo=False)
        report[f"resumed_at_{at}_vs_uninterrupted"] = _max_diff(runs[0] / final, run / final)
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
