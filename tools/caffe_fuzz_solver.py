"""Random solvers run by real Caffe and by our engine, compared update by update: the solver
measurement docs/fidelity.md quotes (seeds 0-399).

Each case is a small random net (an InnerProduct or convolution stack with ReLUs, some layers
frozen, some with their own lr_mult and decay_mult, some sharing parameters) and a random solver:
each type (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) with its own hyperparameters, every
lr policy, weight decay L2 or L1, iter_size, clip_gradients.  Caffe trains it 6 updates (its own
Solver::Step) and the arrays are written in the solver golden format; tests/golden_checks/solver.py
compares ours after every update within the golden tolerance.

  # with pycaffe (tools/caffe_readers.py says how it was built), a process per case:
  GLOG_minloglevel=2 PYTHONPATH=<caffe>/python /usr/bin/python3 tools/caffe_fuzz_solver.py gen OUT 0 400
  .venv/bin/python tools/caffe_fuzz_solver.py check OUT
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections import Counter
from pathlib import Path

from caffe_fuzz import cli, refused_seeds  # this folder, on sys.path as the script's own

ITERS = 6
GAUSS = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.1 }'
POLICIES = {
    "fixed": "",
    "step": 'gamma: 0.5\nstepsize: 2\n',
    "exp": "gamma: 0.9\n",
    "inv": "gamma: 0.1\npower: 0.75\n",
    "multistep": "gamma: 0.3\nstepvalue: 2\nstepvalue: 4\n",
    "poly": "power: 1.5\n",
    "sigmoid": "gamma: -0.8\nstepsize: 3\n",
}


def _params(rng: random.Random, blobs: int, shared: str | None) -> str:
    """The layer's param specs: none, frozen, or own lr_mult/decay_mult; a name where shared."""
    if shared:
        return "".join(f'param {{ name: "{shared}{k}" }} ' for k in range(blobs))
    kind = rng.choice(["", "", "frozen", "mults"])
    if kind == "frozen":
        return "param { lr_mult: 0 } " * blobs
    if kind == "mults":
        return "".join(f"param {{ lr_mult: {rng.choice([0.5, 1, 2])} decay_mult: {rng.choice([0, 0.5, 1])} }} "
                       for _ in range(blobs))
    return ""


def net_text(rng: random.Random) -> str:
    batch, classes = rng.choice([3, 4]), 5
    if rng.random() < 0.5:  # an image net
        lines = [f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {batch} dim: 3 '
                 'dim: 7 dim: 7 } } }']
        lines.append(f'layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1" {_params(rng, 2, None)}'
                     f'convolution_param {{ num_output: 4 kernel_size: 3 {GAUSS} }} }}')
        lines.append('layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }')
        below = "conv1"
    else:
        lines = [f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {batch} dim: 6 }} }} }}']
        below = "data"
    lines.append(f'layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: {batch} }} }} }}')
    count = rng.randint(1, 3)
    shared = count == 3 and rng.random() < 0.5  # ip1 and ip2 (6 -> 6) share 's0', 's1'
    for i in range(count):
        name = f"ip{i}"
        lines.append(f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{below}" top: "{name}" '
                     f'{_params(rng, 2, "s" if shared and i > 0 else None)}'
                     f'inner_product_param {{ num_output: 6 {GAUSS} }} }}')
        lines.append(f'layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        below = name
    lines.append(f'layer {{ name: "fc" type: "InnerProduct" bottom: "{below}" top: "fc" {_params(rng, 2, None)}'
                 f'inner_product_param {{ num_output: {classes} {GAUSS} }} }}')
    lines.append('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }')
    return "\n".join(lines) + "\n"


def solver_text(rng: random.Random) -> str:
    kind = rng.choice(["SGD", "SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
    lr = {"AdaDelta": rng.choice([1.0, 0.5]), "Adam": rng.choice([0.01, 0.05])}.get(kind, rng.choice([0.01, 0.1, 0.3]))
    text = f'type: "{kind}"\nbase_lr: {lr}\n'
    if kind in ("SGD", "Nesterov"):
        text += f"momentum: {rng.choice([0, 0.5, 0.9])}\n"
    elif kind == "Adam":
        text += f"momentum: {rng.choice([0.9, 0.5])}\nmomentum2: {rng.choice([0.999, 0.9])}\ndelta: {rng.choice([1e-8, 1e-3])}\n"
    elif kind == "AdaDelta":
        text += f"momentum: {rng.choice([0.95, 0.9])}\ndelta: {rng.choice([1e-6, 1e-3])}\n"
    elif kind == "RMSProp":
        text += f"rms_decay: {rng.choice([0.9, 0.98])}\ndelta: {rng.choice([1e-8, 1e-4])}\n"
    elif kind == "AdaGrad":
        text += f"delta: {rng.choice([1e-8, 1e-3])}\n"
    policy = rng.choice(sorted(POLICIES))
    text += f'lr_policy: "{policy}"\n' + POLICIES[policy]
    if rng.random() < 0.7:
        text += f"weight_decay: {rng.choice([0.0005, 0.01, 0.1])}\n"
        if rng.random() < 0.3:
            text += 'regularization_type: "L1"\n'
    if rng.random() < 0.3:
        text += f"iter_size: {rng.choice([2, 3])}\n"
    if rng.random() < 0.3:
        text += f"clip_gradients: {rng.choice([0.5, 5])}\n"
    return text


def run_one(out: Path, seed: int) -> None:
    """Caffe's own Solver::Step, one update at a time from seeded fillers, in the solver golden
    format.  Each iteration's batch is set in the Input blobs before the step, whose forward
    passes all see it (this pycaffe has no Net.before_forward): with iter_size n, batch{k}_j is
    the same batch for every j < n, and loss{k}_j the loss Caffe's last pass left."""
    import caffe
    import numpy as np
    from caffe_readers import CAFFE, _blobs  # this folder, on sys.path as the script's own

    caffe.set_mode_cpu()
    rng = random.Random(seed)
    case = out / f"solver_fuzz{seed:04d}"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    (case / "net.prototxt").write_text(f'name: "{case.name}"\n' + net_text(rng))
    solver = 'net: "net.prototxt"\n' + solver_text(rng) + f"max_iter: {ITERS}\nsnapshot: 0\ndisplay: 1\nsolver_mode: CPU\n"
    (case / "solver.prototxt").write_text(solver)
    passes = max(1, int(dict(line.split(": ") for line in solver.splitlines()).get("iter_size", 1)))
    caffe.set_random_seed(1000 + seed)
    here = Path.cwd()
    os.chdir(case)
    try:
        caffe_solver = caffe.get_solver("solver.prototxt")  # a solver Caffe refuses aborts here
    finally:
        os.chdir(here)
    net = caffe_solver.net
    arrays = _blobs(net, "param")
    values = np.random.RandomState(seed)
    for k in range(1, ITERS + 1):
        data = values.standard_normal(net.blobs["data"].data.shape).astype(np.float32)
        label = values.randint(0, 5, size=net.blobs["label"].data.shape).astype(np.float32)
        net.blobs["data"].data[...], net.blobs["label"].data[...] = data, label
        caffe_solver.step(1)
        loss = np.array(net.blobs["loss"].data, dtype=np.float32).reshape(())
        for j in range(passes):
            arrays[f"batch{k}_{j}/data"], arrays[f"batch{k}_{j}/label"] = data, label
            arrays[f"loss{k}" if passes == 1 else f"loss{k}_{j}"] = loss
        arrays.update(_blobs(net, f"step{k}"))
    np.savez_compressed(case / "arrays.npz", **arrays)
    meta = {"iters": ITERS, "caffe": CAFFE, "seed": seed, "note": "a random case of tools/caffe_fuzz_solver.py"}
    (case / "meta.json").write_text(json.dumps(meta, indent=1))


def check(out: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import torch
    from golden_checks import solver

    from replicate.errors import ReplicateError

    torch.set_num_threads(1)
    refused = refused_seeds(out)
    tally: Counter[str] = Counter()
    for case in sorted(out.glob("solver_fuzz*")):
        if int(case.name[len("solver_fuzz"):]) in refused:
            tally["refused by Caffe"] += 1
            continue
        try:
            solver.check(case)
            tally["equal"] += 1
        except ReplicateError as err:
            tally["RUN BY CAFFE, REFUSED BY US"] += 1
            print(case.name, err)
        except AssertionError as err:
            tally["NOT EQUAL"] += 1
            print(case.name, str(err).splitlines()[0])
    print(dict(tally))
    return 1 if any(key.isupper() for key in tally) else 0


def main() -> int:
    return cli(__file__, __doc__.splitlines()[0], run_one, check)


if __name__ == "__main__":
    sys.exit(main())
