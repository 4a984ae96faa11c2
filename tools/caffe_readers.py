"""Writes golden cases of real Caffe for nets in which several layers read one blob, which Caffe's
InsertSplits gives each a Split top of its own.

`solver_sgd_split_readers` (tests/golden_checks/solver.py): a hidden blob `h` read by the next
layer, by a Silence, by a classifier with `propagate_down: false` under a second loss
(loss_weight 0.3) and by an InnerProduct whose top is a loss (0.2) that a ReLU reads; the scores
read by the loss and by an Accuracy, in the train net.  Caffe decides which layers run backward
on the split net, so a reader that sends no gradient cuts only its own Split top and every layer
below still learns; its net outputs are the split net's (the weighted top another layer reads is
output as its Split's first top).  `loss{k}` is the net's loss (each loss top's data times its
weight, summed); meta.json has Caffe's `outputs`.

Two cases of a loss layer's top read by another layer, where Caffe's Net computes another loss
than the net's weighted sum (tests/golden_checks/loss_readers.py), each a SoftmaxWithLoss `loss`
over an InnerProduct `ip`, read by a ReLU `reader`:
  loss_reader_weighted   `loss` has loss_weight 0.5; `reader` is no loss.  InsertSplits splits
                         the top (a loss weight counts as a reader) and moves the 0.5 to the split,
                         then clears the layer's own, and LossLayer::LayerSetUp gives it 1 again.
  loss_reader_default    `loss` has Caffe's default loss weight 1, which InsertSplits does not
                         see; `reader` is a loss (loss_weight 2), so its Backward runs and writes
                         the bottom's diff, where `loss`'s own weight was.
Caffe's Solver trains each case for `ITERS` updates from seeded fillers on standard normal data and
uniform labels, as tools/caffe_goldens.py's solver cases: arrays.npz holds `param/*` (initial),
`batch{k}_0/data|label`, `loss{k}` (loss_reader_*: the top of `loss`, unweighted), `logged{k}` (the loss Caffe's
Net::ForwardFromTo returns, which its Solver logs: each loss top's data times its diff, summed
over the blobs of nonzero `blob_loss_weights`: their data after the step's forward, their diffs from
before it, which the forward multiplies by), `step{k}/*`
after each update; meta.json `blob_loss_weights` as Caffe's Net has them.

The committed cases were made with pycaffe built from brocolli-caffe 9.0.2's sdist (`pip download
brocolli-caffe==9.0.2 --no-binary :all:`; it says it packages BVLC master 9b89154, but its
sources are an SSD fork of an older BVLC Caffe: docs/fidelity.md, "Which Caffe"; rewritten with
master itself on 2026-12-07: the same bytes but memory_chain_in_place, 9e-8 relative) on Debian 12: CMake,
CPU_ONLY, OpenBLAS, LMDB, Debian's python3 3.11 with python3-numpy and python3-protobuf (3.21).
Its CMake files needed: Debian's serial hdf5 paths, USE_LMDB's define and -llmdb, the caffe
library and tools switched back on (the test folder off), -lboost_python311 and no boost_regex;
src/caffe/net.cpp's unused gtest include removed, python/caffe/io.py's skimage import optional,
the shipped caffe.pb.* deleted so protoc 3.21 makes them again.  That pycaffe has no
Net.before_forward, so each batch is set before the step, whose forward sees it.  Run:
  GLOG_minloglevel=2 PYTHONPATH=<caffe source>/python /usr/bin/python3 tools/caffe_readers.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import caffe
import numpy as np

CAFFE = "brocolli-caffe 9.0.2 sources (BVLC master 9b89154), CMake CPU_ONLY build, CPU, float32"
BASE_SEED = 8_500_000
ITERS = 4
CLASSES = 5

SPLIT_NET = (
    'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 10 } } }\n'
    'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 8 } } }\n'
    'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "h"\n'
    '  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } '
    'bias_filler { type: "constant" value: 0.1 } } }\n'
    'layer { name: "relu1" type: "ReLU" bottom: "h" top: "h" }\n'
    'layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "ip2"\n'
    '  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }\n'
    'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }\n'
    'layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }\n'
    'layer { name: "side" type: "Silence" bottom: "h" }\n'
    'layer { name: "aux" type: "InnerProduct" bottom: "h" top: "aux" propagate_down: false\n'
    '  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }\n'
    'layer { name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux" bottom: "label" top: "aux_loss" '
    'loss_weight: 0.3 }\n'
    'layer { name: "ip3" type: "InnerProduct" bottom: "h" top: "ip3" loss_weight: 0.2\n'
    '  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }\n'
    'layer { name: "relu3" type: "ReLU" bottom: "ip3" top: "r3" }\n'
)
NET = (
    'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 8 dim: 10 }} }} }}\n'
    'layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: 8 }} }} }}\n'
    'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
    '  inner_product_param {{ num_output: 5 weight_filler {{ type: "gaussian" std: 0.3 }} '
    'bias_filler {{ type: "constant" value: 0.1 }} }} }}\n'
    'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"{loss} }}\n'
    'layer {{ name: "reader" type: "ReLU" bottom: "loss" top: "reader"{reader} }}\n'
)
SOLVER = 'net: "net.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: {iters}\n' \
         "snapshot: 0\ndisplay: 1\nsolver_mode: CPU\n"
CASES = {
    "solver_sgd_split_readers": ({}, "h is read by ip2, by the Silence side, by aux (propagate_down: false, "
                                 "under aux_loss, loss_weight 0.3) and by ip3 (loss_weight 0.2, itself read by "
                                 "relu3); ip2 by loss and by the Accuracy acc; label by loss, acc and aux_loss: "
                                 "every layer learns, h's gradient is ip2's and ip3's; ip3's loss is output as its "
                                 "Split's first top"),
    "loss_reader_weighted": ({"loss": " loss_weight: 0.5", "reader": ""},
                             "loss has loss_weight 0.5 and reader (a ReLU, no loss) reads its top"),
    "loss_reader_default": ({"loss": "", "reader": " loss_weight: 2"},
                            "loss has the default loss weight and reader (a ReLU with loss_weight 2) reads its top"),
}


def _start(name: str, out_dir: Path, net_text: str) -> int:
    """A fresh `out_dir` holding the case's net.prototxt; returns the case's seed."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "net.prototxt").write_text(f'name: "{name}"\n' + net_text)
    return BASE_SEED + zlib.crc32(name.encode()) % 1_000_000


def _blobs(net: caffe.Net, group: str, diff: bool = False) -> dict[str, np.ndarray]:
    """Every parameter blob of `net` (its diff where `diff`) as `<group>/<layer>/<i>`."""
    return {f"{group}/{layer}/{i}": (p.diff if diff else p.data).copy()
            for layer, params in net.params.items() for i, p in enumerate(params)}


def write_case(name: str, out_dir: Path) -> None:
    parts, note = CASES[name]
    seed = _start(name, out_dir, SPLIT_NET if name.startswith("solver_") else NET.format(**parts))
    (out_dir / "solver.prototxt").write_text(SOLVER.format(iters=ITERS))
    caffe.set_random_seed(seed)
    here = Path.cwd()
    os.chdir(out_dir)
    try:
        solver = caffe.get_solver("solver.prototxt")
    finally:
        os.chdir(here)
    net = solver.net
    weights = {blob: float(w) for blob, w in net.blob_loss_weights.items() if w}
    arrays = _blobs(net, "param")
    rng = np.random.RandomState(seed)
    for k in range(1, ITERS + 1):
        data = rng.standard_normal(net.blobs["data"].data.shape).astype(np.float32)
        label = rng.randint(0, CLASSES, size=net.blobs["label"].data.shape).astype(np.float32)
        net.blobs["data"].data[...] = data  # Input layers leave the blobs as set: the step's forward sees them
        net.blobs["label"].data[...] = label
        arrays[f"batch{k}_0/data"], arrays[f"batch{k}_0/label"] = data, label
        diffs = {b: net.blobs[b].diff.copy() for b in weights}  # what the forward multiplies by
        solver.step(1)
        logged = np.array(sum(float(np.dot(net.blobs[b].data.ravel(), diffs[b].ravel())) for b in weights),
                          dtype=np.float32)
        if name.startswith("solver_"):
            arrays[f"loss{k}"] = logged
        else:
            arrays[f"loss{k}"] = np.array(net.blobs["loss"].data, dtype=np.float32).reshape(())
            arrays[f"logged{k}"] = logged
        arrays.update(_blobs(net, f"step{k}"))
    np.savez_compressed(out_dir / "arrays.npz", **arrays)
    meta = {
        "iters": ITERS, "caffe": CAFFE, "seed": seed, "blob_loss_weights": weights, "outputs": list(net.outputs),
        "layers": [f"{n} ({l.type})" for n, l in zip(net._layer_names, net.layers)],
        "note": note + "; see tools/caffe_readers.py for the arrays",
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


# ----------------------------------------------------------------- in-place layers on shared data
_INPUTS = (
    'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 4 } } }\n'
    'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 3 } } }\n'
)
_IP = 'inner_product_param {{ num_output: {n} weight_filler {{ type: "gaussian" std: 0.5 }} ' \
      'bias_filler {{ type: "gaussian" std: 0.5 }} }}'
#: The rest of the memory_ignored_propagate_down nets: g and h, each through an InnerProduct, summed
#: into the loss's scores.
_TWO_PATHS = (
    'layer { name: "ip2" type: "InnerProduct" bottom: "g" top: "a" ' + _IP.format(n=5) + " }\n"
    'layer { name: "ip3" type: "InnerProduct" bottom: "h" top: "b" ' + _IP.format(n=5) + " }\n"
    'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "e" }\n'
    'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "e" bottom: "label" top: "loss" }\n'
)
#: Nets Caffe runs with data that several blobs share, one forward and backward each (TRAIN,
#: tests/golden_checks/memory.py): `in/*`, `param/*`, `out/*`, `pdiff/*`.
MEMORY_CASES = {
    "memory_split_in_place": (
        _INPUTS
        + 'layer { name: "s" type: "Split" bottom: "data" top: "sa" top: "sb" }\n'
        + 'layer { name: "t" type: "TanH" bottom: "sb" top: "sb" }\n'
        + 'layer { name: "ip" type: "InnerProduct" bottom: "sa" top: "ip" ' + _IP.format(n=5) + " }\n"
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n',
        "an explicit Split's tops share their bottom's data, so the TanH computed in place on sb "
        "changes sa, which ip reads after it",
    ),
    "memory_chain_in_place": (
        _INPUTS
        + 'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "h" ' + _IP.format(n=4) + " }\n"
        + 'layer { name: "sig" type: "Sigmoid" bottom: "h" top: "g" }\n'
        + 'layer { name: "t" type: "TanH" bottom: "g" top: "g" }\n'
        + 'layer { name: "ip2" type: "InnerProduct" bottom: "g" top: "ip2" ' + _IP.format(n=5) + " }\n"
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }\n',
        "the Sigmoid's backward reads its output g, which the TanH computed in place on it has "
        "overwritten by then, so ip1's gradient is not the net's",
    ),
    "memory_ignored_propagate_down": (
        _INPUTS
        + 'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "h" ' + _IP.format(n=4) + " }\n"
        + 'layer { name: "soft" type: "Softmax" bottom: "h" top: "g" propagate_down: false }\n'
        + _TWO_PATHS,
        "h is read by soft (propagate_down: false) and ip3, so InsertSplits gives each a Split top "
        "and the Split runs Backward for ip3; Net::Init runs soft's Backward too, since h needs one, "
        "and the Softmax's Backward never reads propagate_down: the Split adds soft's gradient, so "
        "ip1 trains on both paths where the net says ip3's alone",
    ),
    "memory_scale_product": (
        _INPUTS
        + 'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "h" ' + _IP.format(n=4) + " }\n"
        + 'layer { name: "soft" type: "Scale" bottom: "h" top: "g" propagate_down: false '
          'scale_param { filler { type: "gaussian" mean: 1 std: 0.5 } } }\n'
        + _TWO_PATHS,
        "as memory_ignored_propagate_down with a Scale (propagate_down: false): computing its "
        "scale's gradient it keeps the product top_diff x h in its Split top's diff, which the "
        "Split adds to ip3's gradient for ip1",
    ),
}
#: Nets Caffe refuses in Net::Init (tests/golden_checks/refusals.py): meta.json `caffe_error` is
#: the line Caffe's glog printed before it aborted.
REFUSED_CASES = {
    "refused_in_place_after_readers": (
        _INPUTS
        + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "h" ' + _IP.format(n=5) + " }\n"
        + 'layer { name: "twice" type: "Eltwise" bottom: "h" bottom: "h" top: "twice" }\n'
        + 'layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }\n'
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "h" bottom: "label" top: "loss" }\n',
        "h is read by twice before relu computes in place on it: InsertSplits gives relu a Split top "
        "of its own to read, so its top h is a second blob of that name",
    ),
    "refused_flatten_in_place": (
        _INPUTS
        + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "h" ' + _IP.format(n=5) + " }\n"
        + 'layer { name: "flat" type: "Flatten" bottom: "h" top: "h" }\n'
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "h" bottom: "label" top: "loss" }\n',
        "a Flatten computed in place",
    ),
    "refused_split_in_place": (
        _INPUTS
        + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "h" ' + _IP.format(n=5) + " }\n"
        + 'layer { name: "split" type: "Split" bottom: "h" top: "h" }\n'
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "h" bottom: "label" top: "loss" }\n',
        "a Split computed in place",
    ),
    "refused_split_without_tops": (
        _INPUTS
        + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "h" ' + _IP.format(n=5) + " }\n"
        + 'layer { name: "split" type: "Split" bottom: "h" }\n'
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "h" bottom: "label" top: "loss" }\n',
        "a Split with no top",
    ),
    "refused_loss_label_first_axis": (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 5 dim: 2 } } }\n'
        'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 } } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" top: "loss" }\n',
        "4 labels for scores (2, 5, 2): the count a per-position loss needs, but another first axis",
    ),
    "refused_batchnorm_1d": (
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 } } }\n'
        'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" }\n',
        "a BatchNorm over a blob of one axis: Caffe reads its channels as axis 1",
    ),
}


def write_memory_case(name: str, out_dir: Path) -> None:
    text, note = MEMORY_CASES[name]
    seed = _start(name, out_dir, text)
    caffe.set_random_seed(seed)
    net = caffe.Net(str(out_dir / "net.prototxt"), caffe.TRAIN)
    rng = np.random.RandomState(seed)
    arrays: dict[str, np.ndarray] = {
        "in/data": rng.standard_normal(net.blobs["data"].data.shape).astype(np.float32),
        "in/label": rng.randint(0, CLASSES, size=net.blobs["label"].data.shape).astype(np.float32),
    }
    for blob in ("data", "label"):
        net.blobs[blob].data[...] = arrays[f"in/{blob}"]
    arrays.update(_blobs(net, "param"))
    net.forward()
    for blob in net.outputs:
        arrays[f"out/{blob}"] = net.blobs[blob].data.copy()
    net.backward()
    arrays.update(_blobs(net, "pdiff", diff=True))
    np.savez_compressed(out_dir / "arrays.npz", **arrays)
    meta = {"phase": "TRAIN", "caffe": CAFFE, "seed": seed, "outputs": list(net.outputs), "note": note}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def write_refused_case(name: str, out_dir: Path) -> None:
    """Caffe's Net::Init in a process of its own, whose abort is the expected end."""
    text, note = REFUSED_CASES[name]
    _start(name, out_dir, text)
    program = f"import caffe; caffe.set_mode_cpu(); caffe.Net({str(out_dir / 'net.prototxt')!r}, caffe.TRAIN)"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env={**os.environ, "GLOG_minloglevel": "0"})
    fatal = [line for line in done.stderr.splitlines() if line.startswith("F")]
    assert done.returncode != 0 and fatal, f"Caffe ran {name}: {done.stderr[-500:]}"
    meta = {"phase": "TRAIN", "caffe": CAFFE, "caffe_error": fatal[0].split("] ", 1)[1], "note": note}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def main() -> None:
    caffe.set_mode_cpu()
    golden = Path("tests/golden/caffe")
    for name in CASES:
        write_case(name, golden / name)
        print(name)
    for name in MEMORY_CASES:
        write_memory_case(name, golden / name)
        print(name)
    for name in REFUSED_CASES:
        write_refused_case(name, golden / name)
        print(name)


if __name__ == "__main__":
    main()
