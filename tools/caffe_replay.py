"""Replays the committed golden cases through the pycaffe at hand and reports how far that Caffe
lands from what is stored: whether the goldens, made by one Caffe build, hold for another.

For every case folder under the roots given: a layer case (`net.prototxt` with Input layers,
`arrays.npz` with `in/*`) is run forward from its stored parameters and inputs, and backward from
its stored top gradients where it has gradients; a `solver_*` case is trained from its initial
parameters on its stored batches (tools/caffe_golden.py's replay).  Each case prints the worst
error as a fraction of the suite's tolerance (forward and solver 1e-5, gradients 1e-4, relative to
the blob's largest magnitude) and `bit-identical` where every array is.  Cases of another format
(data layers, caffenet_full's sums, the reader and refusal cases of tools/caffe_readers.py) are
listed as not replayed: tools/caffe_goldens.py and tools/caffe_readers.py rewrite those, and git
shows what changed.

  GLOG_minloglevel=2 PYTHONPATH=<caffe>/python /usr/bin/python3 tools/caffe_replay.py \
      tests/golden/caffe tests/golden/caffe_grad
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import caffe
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from caffe_golden import replay_solver_case  # noqa: E402


def fraction(ours: np.ndarray, stored: np.ndarray, tolerance: float) -> float:
    """The largest difference as a fraction of `tolerance` times the stored blob's largest finite
    magnitude; equal values (infinities included) count 0, any other non-finite one infinity."""
    ours, stored = ours.astype(np.float64), stored.astype(np.float64)
    same = (ours == stored) | (np.isnan(ours) & np.isnan(stored))
    if same.all():
        return 0.0
    finite = np.isfinite(stored)
    scale = max(float(np.abs(stored[finite]).max()) if finite.any() else 0.0, 1e-30)
    err = np.where(same, 0.0, np.abs(ours - stored))
    return float(err.max() / (tolerance * scale))


#: An arrays.npz group: where Caffe holds its value (a blob, or a parameter `layer/i`), which half,
#: and the suite's tolerance for it.
GROUPS = {"out": ("blob", "data", 1e-5), "after": ("param", "data", 1e-5),
          "diff": ("blob", "diff", 1e-4), "pdiff": ("param", "diff", 1e-4)}


def _compared(net: caffe.Net, arrays: dict[str, np.ndarray],
              groups: tuple[str, ...]) -> Iterator[tuple[str, np.ndarray, np.ndarray, float]]:
    """(key, this Caffe's value, the stored one, tolerance) for each stored array of `groups`."""
    for key, stored in arrays.items():
        group, _, name = key.partition("/")
        if group not in groups:
            continue
        where, half, tolerance = GROUPS[group]
        if where == "blob":
            blob = net.blobs[name]
        else:
            layer, _, i = name.rpartition("/")
            blob = net.params[layer][int(i)]
        yield key, getattr(blob, half).copy(), stored, tolerance


def replay_layer_case(case: Path) -> tuple[float, str, bool]:
    """(worst fraction of tolerance, where, every array bit-identical) for one layer case."""
    arrays = dict(np.load(case / "arrays.npz"))
    meta = json.loads((case / "meta.json").read_text())
    phase = caffe.TRAIN if meta.get("phase") == "TRAIN" else caffe.TEST
    weights = case / "weights.caffemodel"
    net = (caffe.Net(str(case / "net.prototxt"), str(weights), phase) if weights.exists()
           else caffe.Net(str(case / "net.prototxt"), phase))
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            if f"param/{layer}/{i}" in arrays:
                p.data[...] = arrays[f"param/{layer}/{i}"]
    for key, value in arrays.items():
        if key.startswith("in/"):
            net.blobs[key[3:]].data[...] = value
    net.forward()
    results = list(_compared(net, arrays, ("out", "after")))
    if any(k.startswith(("diff/", "pdiff/")) for k in arrays):
        for key, value in arrays.items():
            if key.startswith("topdiff/"):
                net.blobs[key[8:]].diff[...] = value
        net.backward()
        results += _compared(net, arrays, ("diff", "pdiff"))
    worst = max(((fraction(o, s, t), k) for k, o, s, t in results), default=(0.0, ""))
    identical = all(np.array_equal(o, s, equal_nan=True) for _, o, s, _ in results)
    return worst[0], worst[1], identical


def replay(case: Path) -> str | None:
    """One case's line, or None where it is of another format."""
    arrays = case / "arrays.npz"
    files = np.load(arrays).files if arrays.exists() else []
    meta = json.loads((case / "meta.json").read_text())
    # tools/caffe_readers.py's solver case stores the net's weighted loss, which this replay cannot read.
    if case.name.startswith("solver_") and "loss1" in files and "blob_loss_weights" not in meta:
        worst, where = replay_solver_case(case)
        return f"{case}: {worst:.3g} of the tolerance{' (bit-identical)' if worst == 0 else ''} {where}"
    if (case / "net.prototxt").exists() and "weights" not in meta and any(k.startswith("in/") for k in files):
        worst, where, identical = replay_layer_case(case)
        return f"{case}: {worst:.3g} of the tolerance{' (bit-identical)' if identical else ''} {where}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", type=Path, nargs="+")
    parser.add_argument("--case", action="store_true", help="the roots are case folders, replayed here")
    args = parser.parse_args()
    caffe.set_mode_cpu()
    if args.case:
        for case in args.roots:
            print(replay(case) or f"{case}: another format")
        return 0
    skipped = []
    for case in sorted(p.parent for root in args.roots for p in root.glob("*/meta.json")):
        # A case Caffe aborts on (a layer or field this build lacks) must not end the others.
        done = subprocess.run([sys.executable, __file__, "--case", str(case)], capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{case}: Caffe aborted (exit {done.returncode}): {last[:200]}")
        elif lines and lines[-1].endswith(": another format"):
            skipped.append(case.name)
        else:
            print(lines[-1] if lines else f"{case}: no output")
    print(f"not replayed (another format): {', '.join(skipped)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
