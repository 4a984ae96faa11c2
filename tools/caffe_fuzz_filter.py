"""Which layers each net of a solver holds, by real Caffe and by us, for random include/exclude
rules and states: the measurement docs/fidelity.md quotes.

Each case is a net of ReLUs over one Input, each layer with include or exclude rules (phase,
min_level, max_level, stage, not_stage; now and then both kinds, which Caffe refuses), a `state`
in the net now and then, and a solver with 0-2 test nets and random train_state/test_state.
Caffe's side (pycaffe `get_solver`, in a process of its own) lists the layers of its train net and
test nets (without the Splits it inserts); ours filters the same nets through
replicate.solver.nets and replicate.net.state.

  .venv/bin/python tools/caffe_fuzz_filter.py <caffe>/python OUT 0 300
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replicate.errors import ReplicateError  # noqa: E402
from replicate.io.model import load_solver  # noqa: E402
from replicate.net.state import filter_net, make_state  # noqa: E402
from replicate.solver.nets import test_nets, train_net  # noqa: E402

CAFFE_SIDE = """
import json, caffe
caffe.set_mode_cpu()
solver = caffe.get_solver("solver.prototxt")
nets = [solver.net] + list(solver.test_nets)
print(json.dumps([[n for n in net._layer_names if not n.endswith("_split") and "_split_" not in n] for net in nets]))
"""


def rule(rng: random.Random) -> str:
    parts = []
    if rng.random() < 0.5:
        parts.append(f"phase: {rng.choice(['TRAIN', 'TEST'])}")
    if rng.random() < 0.3:
        parts.append(f"min_level: {rng.randint(-1, 2)}")
    if rng.random() < 0.3:
        parts.append(f"max_level: {rng.randint(-1, 2)}")
    parts += [f'stage: "{rng.choice("abc")}"' for _ in range(rng.choice([0, 0, 1, 2]))]
    parts += [f'not_stage: "{rng.choice("abc")}"' for _ in range(rng.choice([0, 0, 1]))]
    return " ".join(parts)


def state(rng: random.Random, key: str) -> str:
    parts = []
    if rng.random() < 0.3:
        parts.append(f"phase: {rng.choice(['TRAIN', 'TEST'])}")
    if rng.random() < 0.5:
        parts.append(f"level: {rng.randint(-1, 2)}")
    parts += [f'stage: "{rng.choice("abc")}"' for _ in range(rng.choice([0, 1, 2]))]
    return f"{key} {{ {' '.join(parts)} }}" if parts else ""


def case(seed: int) -> tuple[str, str]:
    """(net.prototxt, solver.prototxt) of the seed."""
    rng = random.Random(seed)
    net = ['name: "f"']
    if rng.random() < 0.4:
        net.append(state(rng, "state"))
    net.append('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }')
    for i in range(rng.randint(2, 8)):
        draw, rules = rng.random(), ""
        if draw < 0.35:
            rules = " ".join(f"include {{ {rule(rng)} }}" for _ in range(rng.randint(1, 2)))
        elif draw < 0.6:
            rules = " ".join(f"exclude {{ {rule(rng)} }}" for _ in range(rng.randint(1, 2)))
        elif draw < 0.63:
            rules = f"include {{ {rule(rng)} }} exclude {{ {rule(rng)} }}"
        net.append(f'layer {{ name: "l{i}" type: "ReLU" bottom: "data" top: "l{i}" {rules} }}')
    solver = ['train_net: "net.prototxt"', "base_lr: 0.01", 'lr_policy: "fixed"', "max_iter: 1",
              "solver_mode: CPU", "snapshot_after_train: false"]
    tests = rng.choice([0, 1, 2])
    solver += ['test_net: "net.prototxt"'] * tests + ["test_iter: 1"] * tests + (["test_interval: 100"] if tests else [])
    if rng.random() < 0.5:
        solver.append(state(rng, "train_state"))
    if tests and rng.random() < 0.6:
        solver += [state(rng, "test_state") or "test_state { }" for _ in range(tests)]
    return "\n".join(net) + "\n", "\n".join(solver) + "\n"


def ours(folder: Path) -> list[list[str]] | str:
    try:
        param = load_solver(folder / "solver.prototxt")
        specs = [train_net(param, folder), *test_nets(param, folder)]
        return [[layer.name for layer in filter_net(s.param, make_state(s.param, s.phase, s.stages, s.level))]
                for s in specs]
    except ReplicateError as err:
        return str(err)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("caffe_python", type=Path, help="pycaffe's folder (<caffe>/python)")
    parser.add_argument("out", type=Path)
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    tally: Counter[str] = Counter()
    for seed in range(args.first, args.first + args.count):
        folder = args.out / f"filter{seed:05d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        net, solver = case(seed)
        (folder / "net.prototxt").write_text(net)
        (folder / "solver.prototxt").write_text(solver)
        done = subprocess.run(["/usr/bin/python3", "-c", CAFFE_SIDE], cwd=folder, capture_output=True, text=True,
                              timeout=60, env={"PYTHONPATH": str(args.caffe_python), "GLOG_minloglevel": "2",
                                               "PATH": "/usr/bin:/bin"})
        mine = ours(folder)
        if done.returncode:
            fatal = [line.split("] ", 1)[-1] for line in done.stderr.splitlines() if line.startswith("F")]
            outcome = "refused by both" if isinstance(mine, str) else "REFUSED BY CAFFE, RUN BY US"
            detail = f"Caffe: {fatal[:1]}, ours: {mine}"
        elif isinstance(mine, str):
            outcome, detail = "REFUSED BY US", mine
        else:
            theirs = json.loads(done.stdout.strip().splitlines()[-1])
            outcome = "same layers" if mine == theirs else "DIFFERENT"
            detail = f"Caffe {theirs}, ours {mine}"
        tally[outcome] += 1
        if outcome.isupper():
            print(f"seed {seed}: {outcome}: {detail}")
    print(dict(sorted(tally.items())))
    return 1 if any(key.isupper() for key in tally) else 0


if __name__ == "__main__":
    raise SystemExit(main())
