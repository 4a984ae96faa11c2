"""Real Caffe's snapshots of each solver type, and where Caffe goes from them: the golden cases
tests/golden/caffe_train_e2e_weights/resume/<type>/ that tests/test_solver_resume.py resumes.

For each of SGD, Nesterov, AdaGrad, RMSProp, AdaDelta and Adam, over the e2e train net and LMDB:
pycaffe trains 3 iterations from init.caffemodel and snapshots (`snap_iter_3.caffemodel` and
`.solverstate`, whose history holds each type's blobs: AdaDelta's and Adam's two per parameter);
a second process (LMDB refuses one environment opened twice in a process) makes a fresh solver,
restores that solverstate and trains to iteration 6; its parameters are `after6.npz`
(`<layer>/<i>`).  Restored, Caffe's data layers start again from the first record.

  GLOG_minloglevel=2 PYTHONPATH=<caffe>/python /usr/bin/python3 tools/caffe_resume_goldens.py OUT
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

E2E = Path(__file__).resolve().parents[1] / "tests" / "golden" / "caffe_train_e2e"
TYPES = {
    "SGD": (0.01, "momentum: 0.9"), "Nesterov": (0.01, "momentum: 0.9"), "AdaGrad": (0.01, ""),
    "RMSProp": (0.01, "rms_decay: 0.95"), "AdaDelta": (1.0, "momentum: 0.95 delta: 1e-6"),
    "Adam": (0.001, "momentum: 0.9 momentum2: 0.999 delta: 1e-8"),
}


def snapshot(case: Path, kind: str) -> None:
    import caffe

    rate, extra = TYPES[kind]
    case.mkdir(parents=True)
    (case / "solver.prototxt").write_text(
        f'train_net: "train.prototxt"\ntype: "{kind}"\nbase_lr: {rate}\nlr_policy: "step"\ngamma: 0.5\n'
        f'stepsize: 2\n{extra}\nweight_decay: 0.005\ndisplay: 1\nmax_iter: 6\nsnapshot_prefix: "snap"\n'
        "solver_mode: CPU\n")
    for name in ("train.prototxt", "mean.binaryproto", "init.caffemodel", "train_lmdb"):
        (shutil.copytree if (E2E / name).is_dir() else shutil.copy)(E2E / name, case / name)
    os.chdir(case)
    caffe.set_mode_cpu()
    solver = caffe.get_solver("solver.prototxt")
    solver.net.copy_from("init.caffemodel")
    solver.step(3)
    solver.snapshot()


def resume(case: Path) -> None:
    import caffe
    import numpy as np

    os.chdir(case)
    caffe.set_mode_cpu()
    solver = caffe.get_solver("solver.prototxt")
    solver.restore("snap_iter_3.solverstate")
    solver.step(3)
    np.savez_compressed(case / "after6.npz", **{f"{layer}/{i}": blob.data.copy()
                                                for layer, blobs in solver.net.params.items()
                                                for i, blob in enumerate(blobs)})
    for name in ("train.prototxt", "mean.binaryproto", "init.caffemodel", "train_lmdb"):
        (shutil.rmtree if (case / name).is_dir() else os.remove)(case / name)


def main() -> int:
    if len(sys.argv) == 4:  # one phase of one type, in a process of its own
        case, kind, phase = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
        snapshot(case, kind) if phase == "snapshot" else resume(case)
        return 0
    out = Path(sys.argv[1]).resolve()
    for kind in TYPES:
        shutil.rmtree(out / kind, ignore_errors=True)
        for phase in ("snapshot", "resume"):
            subprocess.run([sys.executable, __file__, str(out / kind), kind, phase], check=True)
        print(kind)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
