"""What a CaffeNet snapshot (.caffemodel + .solverstate, ~2 x 233 MB) costs the training loop.

  python benchmarks/snapshot_cost.py [--device cpu|cuda] [--repeat 3]

Times `Solver.snapshot()` (what the loop waits for: the copy of weights and history to host
memory, then it goes on) and the background write that follows (messages, serialization, the two
files written and renamed), in wall and process CPU seconds (the writer's CPU time includes the loop's), median of --repeat.  The files land
in a temporary folder that is removed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replicate.bench.step import caffenet, solver_param  # noqa: E402
from replicate.solver.log import RunLog  # noqa: E402
from replicate.solver.device import device_name  # noqa: E402
from replicate.solver.solver import Solver  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        param = solver_param(caffenet(1), device)
        param.snapshot_prefix = str(Path(folder) / "snap")
        solver = Solver(param, Path(folder), device, RunLog(None, False))
        loop, loop_cpu, written, cpu = [], [], [], []
        for i in range(args.repeat):
            solver.iter = i + 1
            started, cpu_started = time.perf_counter(), time.process_time()
            solver.snapshot()
            loop.append(time.perf_counter() - started)
            loop_cpu.append(time.process_time() - cpu_started)
            solver.close()  # waits for the background writer
            written.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
        size = sum(p.stat().st_size for p in Path(folder).iterdir())
    print(f"{device_name(device)}, torch {torch.__version__}: CaffeNet snapshot ({size / args.repeat / 1e6:.0f} MB): "
          f"the loop waits {statistics.median(loop):.3f} s ({statistics.median(loop_cpu):.3f} s CPU); written in {statistics.median(written):.2f} s "
          f"({statistics.median(cpu):.2f} s CPU), median of {args.repeat}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
