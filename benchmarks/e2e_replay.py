"""Replay real Caffe's 20-iteration `caffe train -weights` run on any device, precision and path.

  python benchmarks/e2e_replay.py --device cuda                       # the eager reference path
  python benchmarks/e2e_replay.py --device cuda --compile inductor    # one compiled graph, CUDA graph

The run is tests/golden/caffe_train_e2e with init.caffemodel loaded, Caffe's log and snapshots
those of tests/golden/caffe_train_e2e_weights (the CPU test `test_from_init_weights_replays_
caffes_whole_run` makes the same comparison).  Prints the largest relative deviation of the
logged numbers (loss, lr, test outputs: |ours - Caffe's| / (0.1 + |Caffe's|), as Caffe prints 6
digits) and of the snapshots' parameters at iterations 10 and 20 (relative to each blob's
largest value); exits 1 when either exceeds 1e-5, the test's criteria.  With --compile it also
exits 1 when a compile check failed (the run then fell back to eager, so the figures would not be
the compiled path's), and prints the checks' differences.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from solver_support import copy_run, replay_errors  # noqa: E402

from replicate.solver.run import train  # noqa: E402

TOLERANCE = 1e-5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--compile", default="", help="torch.compile backend (default: eager, no compile)")
    parser.add_argument("--out", help="also write the figures here as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run = copy_run(Path(folder), "run")
        train(run / "solver.prototxt", weights=str(run / "init.caffemodel"), device=args.device,
              precision=args.precision, compile=args.compile or False, echo=False)
        replay = replay_errors(run)
        checks = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                  if json.loads(line)["kind"] == "compile_check"]
    stayed_compiled = all(c["passed"] for c in checks)
    ok = replay.log_error <= TOLERANCE and replay.snapshot_error <= TOLERANCE and stayed_compiled
    figures = {**vars(args), "log_lines_match": replay.same_lines, "logged_values": replay.logged_values,
               "max_relative_log_error": replay.log_error, "max_relative_snapshot_error": replay.snapshot_error,
               "compile_checks": {c["checked"]: c["difference"] for c in checks}, "stayed_compiled": stayed_compiled,
               "within_1e-5": ok}
    print(json.dumps(figures))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
