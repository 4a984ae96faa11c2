"""Small plans on disk for the grid tests, trained by tests/grid_fake_train.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from replicate.experiments.netfiles import solver_facts
from replicate.experiments.planfile import PlannedNet

FAKE_TRAIN = [sys.executable, str(Path(__file__).with_name("grid_fake_train.py"))]

SOLVER = """net: "train.prototxt"
base_lr: 0.01
max_iter: {max_iter}
snapshot: {snapshot}
snapshot_prefix: "snap/{name}"
"""


def make_plan(root: Path, nets: list[tuple[str, str | None]], max_iter: int = 6, snapshot: int = 2,
              fake: dict[str, dict] | None = None) -> Path:
    """Write `root/plan.json` and a folder per (name, base) with a solver; `fake` gives a
    net's fake.json (see grid_fake_train.py).  A net with a base starts from the base's final
    weights, as `generate` writes it."""
    entries = []
    for name, base in nets:
        net_dir = root / name
        (net_dir / "snap").mkdir(parents=True)
        (net_dir / "solver.prototxt").write_text(SOLVER.format(max_iter=max_iter, snapshot=snapshot, name=name))
        (net_dir / "manifest.json").write_text(json.dumps({"name": name}))
        if fake and name in fake:
            (net_dir / "fake.json").write_text(json.dumps(fake[name]))
        weights = f"../{base}/snap/{base}_iter_{max_iter}.caffemodel" if base else None
        entries.append({"name": name, "dir": name, "treatment": "t", "split": "0", "n": 0,
                        "solver": "solver.prototxt", "depends_on": base, "weights": weights,
                        "max_iter": max_iter})
    path = root / "plan.json"
    path.write_text(json.dumps({"version": 1, "nets": entries}, indent=1))
    return path


def invocations(net_dir: Path) -> list[dict]:
    """The runs of the fake trainer in `net_dir`: argv, gpu, start (and end when it finished)."""
    runs: list[dict] = []
    path = net_dir / "invocations.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        record = json.loads(line)
        if "end" in record:
            runs[-1]["end"] = record["end"]
        else:
            runs.append(record)
    return runs


def final_weights(net: PlannedNet) -> Path:
    """Where Caffe writes the net's last weights (`<snapshot_prefix>_iter_<max_iter>.caffemodel`),
    read from its solver: the path a dependant's plan entry must name."""
    facts = solver_facts(net)
    return facts.prefix.parent / f"{facts.prefix.name}_iter_{facts.max_iter}.caffemodel"
