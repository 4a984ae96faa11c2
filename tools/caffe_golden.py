"""Writes `tests/golden/caffe_grad/`: golden cases whose gradients come from real BVLC Caffe.

Why: the per-layer cases of `tests/golden/caffe/` were run without a loss and without
`force_backward`, so Caffe skipped their backward pass and every `diff/*` and `pdiff/*` there is
zero.  This script reruns the same nets (same case names, same `arrays.npz` / `meta.json` /
`weights.caffemodel` format, see `/work/shared/caffe_golden/README.md`) with `force_backward: true`
and new random values, so Caffe's own Backward of every layer is what the engine is checked
against.  It also adds a few cases for Caffe's tie and kink rules (`EXTRA_CASES`).

It imports pycaffe, so it never runs in CI; its output is committed.  Rewritten with BVLC master
9b89154 itself on 2026-12-07 (docs/fidelity.md, "Which Caffe"): the same bytes but for Accuracy's
tie rule, which master changed, and float noise of 1e-7.

How pycaffe was built (CPU only, outside the repo, Debian 12, gcc 12, protobuf 3.21):
  apt-get install libboost-python-dev libboost-thread-dev libboost-system-dev
      libboost-filesystem-dev libboost-regex-dev libgoogle-glog-dev libgflags-dev
      libprotobuf-dev protobuf-compiler libopenblas-dev libhdf5-dev
  pip download --no-deps brocolli-caffe==9.0.2     # says BVLC 9b89154; is an older SSD fork of it
  tar xzf brocolli-caffe-9.0.2.tar.gz -C /work/caffe-src   # its setup.py wants conda: use CMake
  python3 -m venv /work/caffe-venv
  /work/caffe-venv/bin/pip install "numpy<2" protobuf==4.21.12 scipy scikit-image six
  mkdir linkdir; ln -s .../libboost_python311.so linkdir/libboost_python.so   # and hdf5 serial
  cmake -B build -DCMAKE_BUILD_TYPE=Release -DPYTHON_VERSION=python3.11 \
      -DCMAKE_CXX_FLAGS="-O2 -I/usr/include/python3.11 -I<venv numpy include> \
      -I/usr/include/hdf5/serial" -DCMAKE_SHARED_LINKER_FLAGS=-L<linkdir>
  # one local patch: src/caffe/net.cpp includes caffe/test/test_caffe_main.hpp (gtest) for
  # nothing; comment that include out.  Then (about 12 minutes on 2 cores):
  cmake --build build --target pycaffe -j2     # leaves python/caffe/_caffe.so + caffe_pb2.py
  echo <src>/python > /work/caffe-venv/lib/python3.11/site-packages/caffe.pth

Run (from the repo root; about 5 s, caffenet_full included):
  GLOG_minloglevel=2 /work/caffe-venv/bin/python tools/caffe_golden.py [--out tests/golden/caffe_grad]
Solver cases with other random values (the original root's solver_* nets and solvers, trained by
Caffe's own Solver from seeded fillers on fresh batches; a root per base seed, about 2 s):
  ... tools/caffe_golden.py --solvers --base-seed 10000000 --out /tmp/solver_roots/b1
Caffe against itself on a root (bit-identical with the OpenBLAS kernels that wrote it: the
original root's solver cases replay bit for bit with OpenBLAS 0.3.21's SkylakeX kernels on an
AVX-512 Intel Xeon; under OPENBLAS_CORETYPE=Haswell, the AVX2 kernels OpenBLAS runs on CPUs without
AVX-512, it shows the spread real Caffe has between machines):
  OPENBLAS_CORETYPE=Haswell ... tools/caffe_golden.py --replay tests/golden/caffe
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

import caffe
import caffe_goldens  # tools/caffe_goldens.py: its cases are written by it, in both roots
import caffe_readers  # tools/caffe_readers.py: its cases live in the original root only
from caffe.proto import caffe_pb2
from google.protobuf import text_format

CAFFE = "BVLC Caffe (brocolli-caffe 9.0.2), CPU, float32"
#: The original root was made with other seeds; every case here derives its own from this one.
BASE_SEED = 7_000_000

#: Cases of the original root that are not forward/backward cases of one small net.
NOT_LAYER_CASES = ("solver_", "data_", "legacy", "caffemodel_v1", "caffenet_full")
READER_CASES = set(caffe_readers.CASES) | set(caffe_readers.MEMORY_CASES) | set(caffe_readers.REFUSED_CASES)

#: Input scale per case where a plain standard normal would not exercise the layer (LRN with
#: CaffeNet's tiny alpha needs CaffeNet-sized activations to normalise at all; losses want
#: confident logits).
INPUT_SCALE = {"lrn_across_caffenet": 30.0, "softmax_loss": 2.5, "softmax_loss_weighted": 2.5}

Inputs = Callable[[np.random.RandomState, dict[str, tuple[int, ...]]], dict[str, np.ndarray]]


def _small_ints(rng: np.random.RandomState, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Values in {0, 1, 2}: many exact ties."""
    return {b: rng.randint(0, 3, size=s).astype(np.float32) for b, s in shapes.items()}


def _with_zeros(rng: np.random.RandomState, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Standard normal with a third of the values exactly 0 (the ReLU kink)."""
    out = {}
    for b, s in shapes.items():
        v = rng.standard_normal(s).astype(np.float32)
        v[rng.rand(*s) < 1 / 3] = 0.0
        out[b] = v
    return out


def _tied_scores(rng: np.random.RandomState, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Integer scores 0..3, so the true class often ties with others (Accuracy counts a tie
    against it); labels as usual."""
    data = rng.randint(0, 4, size=shapes["data"]).astype(np.float32)
    return {"data": data, "label": rng.randint(0, shapes["data"][1], size=shapes["label"]).astype(np.float32)}


#: Cases with no counterpart in the original root: Caffe's rules at ties and kinks, where a
#: framework's default gradient may differ.  name -> (net body after the name line, inputs, note).
EXTRA_CASES: dict[str, tuple[str, Inputs, str]] = {
    "pool_max_ties": (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 2 dim: 9 dim: 9 } } }\n'
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "out" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }\n'
        'layer { name: "pool_s1" type: "Pooling" bottom: "data" top: "out_s1" pooling_param { pool: MAX kernel_size: 2 stride: 1 } }\n',
        _small_ints,
        "inputs in {0,1,2}: Caffe's MAX pooling routes each window's gradient to the first "
        "maximum in its row-major scan (strict >), overlapping windows accumulate",
    ),
    "eltwise_max_ties": (
        'layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n'
        'layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n'
        'layer { name: "c" type: "Input" top: "c" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n'
        'layer { name: "max2" type: "Eltwise" bottom: "a" bottom: "b" top: "max2" eltwise_param { operation: MAX } }\n'
        'layer { name: "max3" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "max3" eltwise_param { operation: MAX } }\n',
        _small_ints,
        "inputs in {0,1,2}: Caffe's Eltwise MAX gives a tie between bottoms 0 and 1 to bottom 1 "
        "(a > b ? a : b), later bottoms only when strictly greater; the whole gradient goes to the pick",
    ),
    "relu_zero_kink": (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n'
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }\n'
        'layer { name: "leaky" type: "ReLU" bottom: "data" top: "out_leaky" relu_param { negative_slope: 0.1 } }\n',
        _with_zeros,
        "a third of the inputs exactly 0: Caffe's ReLU backward is top_diff * ((x > 0) + "
        "negative_slope * (x <= 0)), so x = 0 gets the negative slope (0 for plain ReLU)",
    ),
    "accuracy_ties": (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 32 dim: 6 } } }\n'
        'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 32 } } }\n'
        'layer { name: "acc1" type: "Accuracy" bottom: "data" bottom: "label" top: "acc1" }\n'
        'layer { name: "acc3" type: "Accuracy" bottom: "data" bottom: "label" top: "acc3" accuracy_param { top_k: 3 } }\n',
        _tied_scores,
        "integer scores: this Caffe's Accuracy ranks (score, class) pairs with std::partial_sort, so "
        "a tie goes to the higher class index, Caffe's rule from July 2014 to 2017 (BVLC master counts "
        "every tie against the true class). Forward only: Accuracy has no Backward (NOT_IMPLEMENTED aborts Caffe under "
        "force_backward), so this net has no force_backward",
    ),
}

#: Cases run forward only, without force_backward (Caffe aborts in their Backward).
FORWARD_ONLY = {"accuracy_top1_top5", "accuracy_ties"}


def case_seed(name: str, base: int = BASE_SEED) -> int:
    return base + zlib.crc32(name.encode()) % 1_000_000


def with_force_backward(text: str) -> str:
    """The original prototxt text with `force_backward: true` after its name line (kept
    textual so the file stays diffable against the original)."""
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("name:")) + 1
    out = "".join(lines[:at] + ["force_backward: true\n"] + lines[at:])
    assert text_format.Parse(out, caffe_pb2.NetParameter()).force_backward
    return out


def input_shapes(net_text: str) -> dict[str, tuple[int, ...]]:
    net = text_format.Parse(net_text, caffe_pb2.NetParameter())
    return {lp.top[0]: tuple(lp.input_param.shape[0].dim) for lp in net.layer if lp.type == "Input"}


def default_inputs(scale: float) -> Inputs:
    def make(rng: np.random.RandomState, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        out = {}
        for b, s in shapes.items():
            if b == "label":
                classes = shapes["data"][1]
                out[b] = rng.randint(0, classes, size=s).astype(np.float32)
            else:
                out[b] = (rng.standard_normal(s) * scale).astype(np.float32)
        return out

    return make


def _no_gradient_bottoms(net: caffe.Net) -> set[str]:
    """Blobs Caffe never gives a gradient: bottoms a layer refuses force_backward on (the label
    of a loss layer, Caffe's LossLayer::AllowForceBackward) and nothing else consumes."""
    refused, wanted = set(), set()
    for i, layer in enumerate(net.layers):
        for j, blob_id in enumerate(net._bottom_ids(i)):
            name = net._blob_names[blob_id]
            (refused if layer.type.endswith("Loss") and j == 1 else wanted).add(name)
    return refused - wanted


def run_case(
    name: str, net_text: str, make_inputs: Inputs, out_dir: Path, backward: bool, note: str | None, base_seed: int
) -> None:
    seed = case_seed(name, base_seed)
    out_dir.mkdir(parents=True)
    (out_dir / "net.prototxt").write_text(net_text)
    caffe.set_random_seed(seed)  # the fillers draw from Caffe's own RNG
    net = caffe.Net(str(out_dir / "net.prototxt"), caffe.TEST)
    rng = np.random.RandomState(seed)
    inputs = make_inputs(rng, input_shapes(net_text))

    arrays: dict[str, np.ndarray] = {}
    for blob, value in inputs.items():
        net.blobs[blob].data[...] = value
        arrays[f"in/{blob}"] = value
    outputs = caffe_goldens.forward_and_record(net, arrays, out_dir)
    if backward:
        loss_weights = net.blob_loss_weights
        for blob in outputs:
            if loss_weights[blob] == 0:
                # Loss blobs keep the loss weight Caffe put into their diff at Net::Init.
                grad = rng.standard_normal(net.blobs[blob].data.shape).astype(np.float32)
                net.blobs[blob].diff[...] = grad
                arrays[f"topdiff/{blob}"] = grad
        net.backward()
        silent = _no_gradient_bottoms(net)
        for blob in inputs:
            if blob not in silent:
                arrays[f"diff/{blob}"] = net.blobs[blob].diff.copy()
        for layer, params in net.params.items():
            for i, p in enumerate(params):
                arrays[f"pdiff/{layer}/{i}"] = p.diff.copy()
    np.savez_compressed(out_dir / "arrays.npz", **arrays)
    meta = {"phase": "TEST", "outputs": outputs, "caffe": CAFFE, "force_backward": backward, "seed": seed}
    if note:
        meta["note"] = note
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


#: caffenet_full: outputs stored whole, intermediate blobs as [sum, sum of squares].
CAFFENET_OUT = ("fc8-new", "loss")
CAFFENET_SUMS = ("conv1", "pool1", "norm1", "conv2", "norm2", "conv3", "pool5", "fc6-new", "fc7-new")


def run_caffenet(src: Path, out_dir: Path, base_seed: int) -> None:
    """The whole transfer net with force_backward: Caffe then also computes the gradients of the
    frozen (lr_mult 0) conv1..conv3 (Net::Init sets param_propagate_down for every parameter)."""
    original = json.loads((src / "meta.json").read_text())
    seed = case_seed("caffenet_full", base_seed)
    net_text = with_force_backward((src / "net.prototxt").read_text())
    out_dir.mkdir(parents=True)
    (out_dir / "net.prototxt").write_text(net_text)
    net = caffe.Net(str(out_dir / "net.prototxt"), caffe.TEST)
    weights = {}
    for k, (key, spec) in enumerate(original["weights"].items()):
        layer, i = key.rsplit("/", 1)
        spec = {"seed": seed * 100 + k, "scale": spec["scale"], "shape": spec["shape"]}
        value = np.random.RandomState(spec["seed"]).standard_normal(spec["shape"]) * spec["scale"]
        net.params[layer][int(i)].data[...] = value.astype(np.float32)
        weights[key] = spec
    rng = np.random.RandomState(seed)
    arrays: dict[str, np.ndarray] = {
        "in/data": (rng.standard_normal(net.blobs["data"].data.shape) * 50).astype(np.float32),
        "in/label": rng.randint(0, 1000, size=net.blobs["label"].data.shape).astype(np.float32),
    }
    net.blobs["data"].data[...] = arrays["in/data"]
    net.blobs["label"].data[...] = arrays["in/label"]
    net.forward()
    for blob in CAFFENET_SUMS:
        v = net.blobs[blob].data.astype(np.float64)
        arrays[f"outsum/{blob}"] = np.array([v.sum(), (v * v).sum()])
    for blob in CAFFENET_OUT:
        arrays[f"out/{blob}"] = net.blobs[blob].data.copy()
    net.backward()
    for key in weights:
        layer, i = key.rsplit("/", 1)
        diff = net.params[layer][int(i)].diff.reshape(-1)
        idx = rng.randint(0, diff.size, size=min(diff.size, 2000))
        d = diff.astype(np.float64)
        arrays[f"pdiffidx/{key}"] = idx.astype(np.int64)
        arrays[f"pdiffsample/{key}"] = diff[idx].copy()
        arrays[f"pdiffsum/{key}"] = np.array([d.sum(), (d * d).sum()])
    np.savez_compressed(out_dir / "arrays.npz", **arrays)
    meta = {
        "phase": "TEST",
        "weights": weights,
        "caffe": CAFFE,
        "force_backward": True,
        "seed": seed,
        "note": "param blob = (np.random.RandomState(seed).standard_normal(shape) * scale).astype(float32), "
        f"per weights[layer/i]; in/data = RandomState({seed}) standard normal * 50, then labels from the "
        "same stream; outsum = [sum, sumsq] of blob; pdiffsample = param diffs at pdiffidx (flat index); "
        "force_backward: the frozen conv1..conv3 get gradients too (Caffe's Net::Init sets "
        "param_propagate_down for every parameter)",
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def caffe_solver(case_dir: Path) -> caffe.Solver:
    """Caffe's solver for the case's `solver.prototxt`, whose `net:` is relative to the working
    directory Caffe runs in, so it is opened from inside the case folder."""
    here = Path.cwd()
    os.chdir(case_dir)
    try:
        return caffe.get_solver("solver.prototxt")
    finally:
        os.chdir(here)


def loss_blobs(net: caffe.Net) -> tuple[str, str]:
    """(scores, loss): the first bottom and the top of the net's loss layer."""
    at = next(i for i, layer in enumerate(net.layers) if layer.type.endswith("Loss"))
    return net._blob_names[net._bottom_ids(at)[0]], net._blob_names[net._top_ids(at)[0]]


def run_solver_case(src: Path, out_dir: Path, seed: int) -> None:
    """The original case's net and solver, trained by Caffe's own Solver for `iters` updates from
    its fillers (seeded) on fresh batches: standard normal data, uniform labels over the classes.
    Same keys as the original root's solver cases (see the fixture README)."""
    iters = json.loads((src / "meta.json").read_text())["iters"]
    out_dir.mkdir(parents=True)
    for name in ("net.prototxt", "solver.prototxt"):
        shutil.copyfile(src / name, out_dir / name)
    caffe.set_random_seed(seed)  # the fillers draw from Caffe's own RNG
    solver = caffe_solver(out_dir)
    net = solver.net
    shapes = input_shapes((src / "net.prototxt").read_text())
    scores, loss = loss_blobs(net)
    classes = net.blobs[scores].data.shape[1]
    arrays: dict[str, np.ndarray] = {}
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            arrays[f"param/{layer}/{i}"] = p.data.copy()
    rng = np.random.RandomState(seed)
    for k in range(1, iters + 1):
        data = rng.standard_normal(shapes["data"]).astype(np.float32)
        label = rng.randint(0, classes, size=shapes["label"]).astype(np.float32)
        net.blobs["data"].data[...] = data
        net.blobs["label"].data[...] = label
        arrays[f"batch{k}_0/data"], arrays[f"batch{k}_0/label"] = data, label
        solver.step(1)  # Input layers leave the blobs as set: this forward sees the batch
        arrays[f"loss{k}"] = np.array(net.blobs[loss].data, dtype=np.float32).reshape(())
        for layer, params in net.params.items():
            for i, p in enumerate(params):
                arrays[f"step{k}/{layer}/{i}"] = p.data.copy()
    np.savez_compressed(out_dir / "arrays.npz", **arrays)
    meta = {
        "iters": iters,
        "caffe": CAFFE,
        "seed": seed,
        "note": "before each iteration k the Input blobs were set to batch{k}_0/*; param/* are initial "
        "values (Caffe fillers, caffe.set_random_seed(seed)); step{k}/* after the k-th update; loss{k} = "
        "loss of the forward pass of iteration k; batches from numpy RandomState(seed): per iteration "
        "standard normal data, then labels uniform over the classes",
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def replay_solver_case(case_dir: Path) -> tuple[float, str]:
    """This Caffe rerun on a stored solver case, from its initial parameters and batches: the worst
    error of its losses and parameters against the stored ones, as a fraction of the solver check's
    tolerance (1e-5 of the blob's largest magnitude), and where.  0 means bit-identical.  Under
    another OpenBLAS kernel (OPENBLAS_CORETYPE=Haswell, as on a CPU without AVX-512) it measures how far
    real Caffe moves from itself, the floor a reimplementation cannot be asked to beat."""
    arrays = dict(np.load(case_dir / "arrays.npz"))
    iters = json.loads((case_dir / "meta.json").read_text())["iters"]
    solver = caffe_solver(case_dir)
    net = solver.net
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            p.data[...] = arrays[f"param/{layer}/{i}"]
    _, loss = loss_blobs(net)
    worst = (0.0, "")

    def fraction(ours: np.ndarray, stored: np.ndarray) -> float:
        err = np.abs(ours.astype(np.float64) - stored).max()
        return float(err / (1e-5 * max(float(np.abs(stored).max()), 1e-30)))

    for k in range(1, iters + 1):
        net.blobs["data"].data[...] = arrays[f"batch{k}_0/data"]
        net.blobs["label"].data[...] = arrays[f"batch{k}_0/label"]
        solver.step(1)
        worst = max(worst, (fraction(net.blobs[loss].data.reshape(()), arrays[f"loss{k}"]), f"loss{k}"))
        for layer, params in net.params.items():
            for i, p in enumerate(params):
                stored = arrays[f"step{k}/{layer}/{i}"]
                worst = max(worst, (fraction(p.data, stored), f"{layer}/{i} after update {k}"))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path("tests/golden/caffe"))
    ap.add_argument(
        "--out", type=Path, help="the root to (re)write; default tests/golden/caffe_grad, none with --solvers"
    )
    ap.add_argument("--skip-caffenet", action="store_true", help="leave caffenet_full out (slow)")
    ap.add_argument(
        "--solvers", action="store_true",
        help="write only the solver_* cases of --src, rerun with new random values (seeds from --base-seed)",
    )
    ap.add_argument("--base-seed", type=int, default=BASE_SEED, help="every case's seed derives from it")
    ap.add_argument(
        "--replay", type=Path, nargs="+", metavar="ROOT",
        help="write nothing: rerun each solver_* case under these roots in this Caffe and print its "
        "worst error as a fraction of the solver check's tolerance",
    )
    args = ap.parse_args()
    if args.solvers and args.out is None:
        ap.error("--solvers needs --out: it would replace the layer root")
    args.out = args.out or Path("tests/golden/caffe_grad")
    caffe.set_mode_cpu()
    if args.replay:
        for case in sorted(p.parent for root in args.replay for p in root.glob("solver_*/meta.json")):
            fraction, where = replay_solver_case(case)
            flag = "FAIL" if fraction > 1 else ""
            print(f"{case.parent.name}/{case.name}\t{fraction:.3f}\t{where}\t{flag}", flush=True)
        return
    if args.out.exists():
        shutil.rmtree(args.out)
    if args.solvers:
        for case in sorted(args.src.glob("solver_*/meta.json")):
            name = case.parent.name
            run_solver_case(case.parent, args.out / name, case_seed(name, args.base_seed))
            print(name)
        return
    for case in sorted(p.parent for p in args.src.glob("*/meta.json")):
        name = case.name
        if name.startswith(NOT_LAYER_CASES) or name in caffe_goldens.CASES or name in READER_CASES:
            continue
        text = (case / "net.prototxt").read_text()
        backward = name not in FORWARD_ONLY
        make = default_inputs(INPUT_SCALE.get(name, 1.0))
        net_text = with_force_backward(text) if backward else text
        run_case(name, net_text, make, args.out / name, backward, None, args.base_seed)
        print(name)
    for name, (body, make, note) in EXTRA_CASES.items():
        backward = name not in FORWARD_ONLY
        head = f'name: "{name}"\n' + ("force_backward: true\n" if backward else "")
        run_case(name, head + body, make, args.out / name, backward, note, args.base_seed)
        print(name)
    for name in caffe_goldens.CASES:  # their own phase, statistics and seeds
        caffe_goldens.write_case(name, "caffe_grad", args.out / name)
        print(name)
    if not args.skip_caffenet:
        run_caffenet(args.src / "caffenet_full", args.out / "caffenet_full", args.base_seed)
        print("caffenet_full")


if __name__ == "__main__":
    main()
