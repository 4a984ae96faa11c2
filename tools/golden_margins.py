"""Prints how close each real-Caffe solver golden case sits to its tolerance.

Why: the solver check passes or fails on the worst element of 8 updates, and the adaptive
solvers (AdaGrad, RMSProp, Adam) divide by a running gradient magnitude, so a last-bit gradient
difference at an element whose gradient nearly cancels its weight decay can move that element by
many times the tolerance.  A pass says little about the next random values; the fraction of the
tolerance used (above 1 fails) says how much room a case has.  Cases at or above `NEAR` are
flagged.  The check itself is `tests/golden_checks/solver.py` (`trajectory`), run here unchanged.

Run from the repo root:
  python tools/golden_margins.py [ROOT ...]     # default tests/golden/caffe
A ROOT is a folder of solver_* cases (or one case folder), e.g. one written by
`tools/caffe_golden.py --solvers --base-seed N --out ROOT`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from golden_checks import solver  # noqa: E402
from golden_checks._compare import FORWARD_RTOL, tolerance_fraction  # noqa: E402

#: A case using at least this fraction of its tolerance is reported as near it.
NEAR = 0.5


def worst(case_dir: Path) -> tuple[float, str]:
    """The largest fraction of the tolerance over the case's losses and parameters, and where."""
    return max(
        (tolerance_fraction(ours, caffe, FORWARD_RTOL, what), what) for what, ours, caffe in solver.trajectory(case_dir)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="*", type=Path, default=[Path("tests/golden/caffe")])
    args = ap.parse_args()
    for root in args.roots:
        cases = [root] if (root / "meta.json").exists() else sorted(p.parent for p in root.glob("solver_*/meta.json"))
        for case in cases:
            fraction, where = worst(case)
            flag = "FAIL" if fraction > 1 else "near" if fraction >= NEAR else ""
            print(f"{case.parent.name}/{case.name}\t{fraction:.3f}\t{where}\t{flag}", flush=True)


if __name__ == "__main__":
    main()
