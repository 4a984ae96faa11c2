"""Random nets run by real Caffe and by our engine, compared: the measurement docs/fidelity.md
quotes (1,000 nets: seeds 0-299 without the later layer kinds, 1000-1699 with them; and 1,000 of
the spatial grammar, tools/caffe_fuzz_spatial.py: seeds 2000-2999).

Each net of the 2-D grammars (TRAIN) has 5-11 random layers over a 3x4 input and 3 labels of 5 classes: InnerProduct
(some frozen, with propagate_down: false or a loss_weight), ReLU and TanH (some in place),
Sigmoid, Eltwise (some with propagate_down flags and coefficients), Concat, an explicit Split,
Silence, Accuracy and SoftmaxWithLoss (some weighted, some with propagate_down: false); a quarter
have force_backward (those without an Accuracy, whose forced Backward aborts in Caffe).

  # with pycaffe (see tools/caffe_readers.py for the build), one process per net, so that a net
  # Caffe refuses aborts only its own: writes <out>/fuzzNNNN in the golden layer-case format
  GLOG_minloglevel=2 PYTHONPATH=<caffe>/python /usr/bin/python3 tools/caffe_fuzz.py gen OUT 0 300 --grammar simple
  GLOG_minloglevel=2 PYTHONPATH=<caffe>/python /usr/bin/python3 tools/caffe_fuzz.py gen OUT 1000 700
  GLOG_minloglevel=2 PYTHONPATH=<caffe>/python /usr/bin/python3 tools/caffe_fuzz.py gen OUT 2000 1000 --grammar spatial
  # with this project's venv: each net refused by both, run by both and equal, or where they part
  .venv/bin/python tools/caffe_fuzz.py check OUT
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import caffe_fuzz_spatial  # this folder, on sys.path as the script's own

SIMPLE = ["ip", "ip", "ip", "relu", "relu_inplace", "sum", "concat", "silence", "loss", "acc", "loss"]
MORE = ["split", "sigmoid", "tanh_inplace", "sum_pd", "loss_pd"]
IP = ('inner_product_param {{ num_output: {k} weight_filler {{ type: "gaussian" std: 0.5 }} '
      'bias_filler {{ type: "gaussian" std: 0.5 }} }}')


def net_text(rng: random.Random, kinds: list[str]) -> str:
    layers = ['layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 4 } } }',
              'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 3 } } }']
    width = {"data": 4}  # the 2-D blobs so far and their widths
    losses = 0
    for i in range(rng.randint(5, 11)):
        kind, name = rng.choice(kinds), f"l{i}"
        src = rng.choice(sorted(width))
        same = [b for b in sorted(width) if width[b] == width[src]]
        fives = [b for b in sorted(width) if width[b] == 5]
        if kind == "ip":
            k, extra = rng.choice([3, 4, 5, 5]), ""
            if rng.random() < 0.2:
                extra += "param { lr_mult: 0 } param { lr_mult: 0 } "
            if rng.random() < 0.15:
                extra += "propagate_down: false "
            if rng.random() < 0.15:
                extra += f"loss_weight: {rng.choice([0.5, 0.2])} "
            layers.append(f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{src}" top: "{name}" {extra}'
                          + IP.format(k=k) + " }")
            width[name] = k
        elif kind in ("relu", "sigmoid"):
            layers.append(f'layer {{ name: "{name}" type: "{kind.title() if kind == "sigmoid" else "ReLU"}" '
                          f'bottom: "{src}" top: "{name}" }}')
            width[name] = width[src]
        elif kind in ("relu_inplace", "tanh_inplace") and src != "data":
            layers.append(f'layer {{ name: "{name}" type: "{"ReLU" if kind == "relu_inplace" else "TanH"}" '
                          f'bottom: "{src}" top: "{src}" }}')
        elif kind == "sum":
            layers.append(f'layer {{ name: "{name}" type: "Eltwise" bottom: "{src}" bottom: "{rng.choice(same)}" '
                          f'top: "{name}" }}')
            width[name] = width[src]
        elif kind == "sum_pd":
            down = rng.choice(["true", "false"]), rng.choice(["true", "false"])
            layers.append(f'layer {{ name: "{name}" type: "Eltwise" bottom: "{src}" bottom: "{rng.choice(same)}" '
                          f'top: "{name}" propagate_down: {down[0]} propagate_down: {down[1]} '
                          'eltwise_param { coeff: 0.5 coeff: -2 } }')
            width[name] = width[src]
        elif kind == "concat":
            other = rng.choice(sorted(width))
            layers.append(f'layer {{ name: "{name}" type: "Concat" bottom: "{src}" bottom: "{other}" top: "{name}" }}')
            width[name] = width[src] + width[other]
        elif kind == "split":
            layers.append(f'layer {{ name: "{name}" type: "Split" bottom: "{src}" top: "{name}a" top: "{name}b" }}')
            width[name + "a"] = width[name + "b"] = width[src]
        elif kind == "silence":
            layers.append(f'layer {{ name: "{name}" type: "Silence" bottom: "{src}" }}')
        elif kind in ("loss", "loss_pd", "acc") and fives:
            scores = rng.choice(fives)
            if kind == "acc":
                layers.append(f'layer {{ name: "{name}" type: "Accuracy" bottom: "{scores}" bottom: "label" '
                              f'top: "{name}" }}')
                continue
            extra = (rng.choice(["", "", "loss_weight: 0.5 ", "loss_weight: 2 "]) if kind == "loss"
                     else "propagate_down: false propagate_down: false ")
            layers.append(f'layer {{ name: "{name}" type: "SoftmaxWithLoss" bottom: "{scores}" bottom: "label" '
                          f'top: "{name}" {extra}}}')
            losses += 1
    if not losses:
        layers.append(f'layer {{ name: "fin" type: "InnerProduct" bottom: "{rng.choice(sorted(width))}" top: "fin" '
                      'inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }')
        layers.append('layer { name: "finloss" type: "SoftmaxWithLoss" bottom: "fin" bottom: "label" top: "finloss" }')
    return "\n".join(layers) + "\n"


def run_one(out: Path, seed: int, grammar: str) -> None:
    """One net through Caffe: forward, top diffs on its outputs that are no loss, backward."""
    import caffe
    import numpy as np
    from caffe_goldens import forward_and_record  # this folder, on sys.path as the script's own

    caffe.set_mode_cpu()
    rng = random.Random(seed)
    if grammar.startswith("spatial"):
        text, phase = caffe_fuzz_spatial.net_text(rng, extended=grammar == "spatial+")
        force = rng.random() < 0.25
    else:
        force = grammar == "more" and rng.random() < 0.25
        text, phase = net_text(rng, SIMPLE if grammar == "simple" else SIMPLE + MORE), "TRAIN"
    force = force and "Accuracy" not in text  # Caffe's Accuracy aborts in a forced Backward
    if force:
        text = "force_backward: true\n" + text
    case = out / f"fuzz{seed:04d}"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    (case / "net.prototxt").write_text(f'name: "fuzz{seed:04d}"\n' + text)
    caffe.set_random_seed(1000 + seed)
    net = caffe.Net(str(case / "net.prototxt"), getattr(caffe, phase))  # a net Caffe refuses aborts here
    values = np.random.RandomState(seed)
    arrays = {}
    for layer in net.layers:
        if layer.type == "BatchNorm":  # stored statistics worth using: a positive factor and variance
            mean, var, factor = layer.blobs
            factor.data[...] = values.uniform(0.5, 2, factor.data.shape)
            mean.data[...] = values.standard_normal(mean.data.shape)
            var.data[...] = values.uniform(0.2, 3, var.data.shape)
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == "Input":
            blob = net.top_names[name][0]
            shape = net.blobs[blob].data.shape
            value = values.randint(0, 5, size=shape) if blob.startswith("label") else values.standard_normal(shape)
            net.blobs[blob].data[...] = arrays[f"in/{blob}"] = value.astype(np.float32)
    for blob in forward_and_record(net, arrays, case):
        if net.blob_loss_weights[blob] == 0 and f"in/{blob}" not in arrays:  # an unread input is output too
            diff = values.standard_normal(net.blobs[blob].data.shape).astype(np.float32)
            net.blobs[blob].diff[...] = arrays[f"topdiff/{blob}"] = diff
    for layer, params in net.params.items():  # what a forward wrote (BatchNorm's batch statistics)
        for i, p in enumerate(params):
            if not np.array_equal(p.data, arrays[f"param/{layer}/{i}"]):
                arrays[f"after/{layer}/{i}"] = p.data.copy()
    net.backward()
    # An input's diff is a gradient only under force_backward; else Caffe's Scale may have left
    # its product there (its Backward's scratch).
    for blob in (k[3:] for k in list(arrays) if k.startswith("in/") and force):
        arrays[f"diff/{blob}"] = net.blobs[blob].diff.copy()
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            arrays[f"pdiff/{layer}/{i}"] = p.diff.copy()
    np.savez_compressed(case / "arrays.npz", **arrays)
    (case / "meta.json").write_text(json.dumps({"phase": phase, "outputs": list(net.outputs), "seed": seed}))


def gen(script: str, out: Path, first: int, count: int, *options: str) -> None:
    """`script one OUT SEED *options` for each seed, in a process of its own so that a case Caffe
    refuses aborts only its own; the seeds Caffe refused, with the line its glog printed, are
    added to OUT/refused.json.  (tools/caffe_fuzz_solver.py runs its cases through this too.)"""
    out.mkdir(parents=True, exist_ok=True)
    refused = []
    for seed in range(first, first + count):
        done = subprocess.run([sys.executable, script, "one", str(out), str(seed), *options],
                              capture_output=True, text=True)
        if done.returncode != 0:
            fatal = [line.split("] ", 1)[-1] for line in done.stderr.splitlines() if line.startswith("F")]
            refused.append({"seed": seed, "caffe_error": fatal[0] if fatal else done.stderr[-300:]})
    (out / "refused.json").write_text(json.dumps(_refused(out) + refused, indent=1))
    print(f"{count} cases, Caffe refused {len(refused)}")


def _refused(out: Path) -> list[dict]:
    return json.loads((out / "refused.json").read_text()) if (out / "refused.json").exists() else []


def refused_seeds(out: Path) -> set[int]:
    """The seeds whose case Caffe refused (OUT/refused.json, written by `gen`)."""
    return {r["seed"] for r in _refused(out)}


def check(out: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import torch
    from golden_checks import layers

    from replicate.errors import ReplicateError
    from replicate.io.prototxt import read_net_text
    from replicate.net.compile import CompiledNet
    from replicate.proto import caffe_pb2

    torch.set_num_threads(1)
    refused = refused_seeds(out)
    tally: Counter[str] = Counter()
    for case in sorted(out.glob("fuzz*")):
        try:
            phase = json.loads((case / "meta.json").read_text())["phase"] if (case / "meta.json").exists() else "TRAIN"
            net = CompiledNet(read_net_text(case / "net.prototxt"), caffe_pb2.Phase.Value(phase))
            net.check_trainable()
            ours = None
        except ReplicateError as err:
            ours = str(err)
        if int(case.name[4:]) in refused:
            tally["refused by both" if ours else "REFUSED BY CAFFE, RUN BY US"] += 1
            continue
        if ours:
            tally[f"run by Caffe, refused by us: {_refused_why(case, layers)}"] += 1
            continue
        try:
            layers.check(case)
            tally["run by both, equal"] += 1
        except AssertionError as err:
            if _equal_to_rounding(case, layers):
                tally["run by both, equal but for values zero to rounding"] += 1
                continue
            tally["RUN BY BOTH, NOT EQUAL"] += 1
            print(case.name, str(err).splitlines()[0])
    print(dict(tally))
    return 1 if any(key.isupper() for key in tally) else 0


def _equal_to_rounding(case: Path, layers) -> bool:
    """Whether the net is equal once a gradient may also differ by 1e-6 of the net's largest
    gradient, and an output by 1e-6 of its largest input or output: a value zero in exact
    arithmetic (a bias's gradient under BatchNorm's batch statistics or under a Softmax across
    what it adds to; an Eltwise 0.5 x - 2 x + 1.5 x) is rounding, Caffe's and ours, and fails a
    tolerance relative to itself."""
    import numpy as np
    from golden_checks._compare import _errors as errors  # the golden rule's error, NaN and FLT_MAX exact

    with np.load(case / "arrays.npz") as arrays:
        largest = {kind: max(float(np.abs(arrays[k]).max(initial=0.0)) for k in arrays.files if k.startswith(prefixes))
                   for kind, prefixes in (("diff/", ("diff/", "pdiff/")), ("out/", ("in/", "out/")))}
    strict = layers.assert_close

    def loose(actual, expected, rtol, what):
        kind = "diff/" if "diff/" in what else "out/" if what.startswith("out/") else None
        if kind is None:
            return strict(actual, expected, rtol, what)
        error, _ = errors(actual, expected, what)
        assert error <= 1e-6 * largest[kind] or strict(actual, expected, rtol, what) is None

    layers.assert_close = loose
    try:
        layers.check(case)
        return True
    except AssertionError:
        return False
    finally:
        layers.assert_close = strict


def _refused_why(case: Path, layers) -> str:
    """Whether Caffe computed a net we refuse otherwise than the net says (what our engine
    computes with its in-place checks off), or the same (refused for safety)."""
    from replicate.net import wiring

    checks = wiring.check_in_place_on_shared_data, wiring.check_in_place_chains
    wiring.check_in_place_on_shared_data = wiring.check_in_place_chains = lambda net: None
    try:
        layers.check(case)
        return "Caffe computed the same"
    except AssertionError:
        return "Caffe computed otherwise"
    except Exception as err:  # refused for another reason
        return type(err).__name__
    finally:
        wiring.check_in_place_on_shared_data, wiring.check_in_place_chains = checks


def cli(script: str, description: str, run_one: Callable[..., None], check: Callable[[Path], int],
        options: dict[str, dict] | None = None) -> int:
    """The command line the fuzz tools share (this one, caffe_fuzz_solver.py, caffe_fuzz_data.py):
    `gen OUT FIRST COUNT` runs `one OUT SEED` for each seed in a process of its own (`gen`), `check
    OUT` compares.  `options` (name -> add_argument's keywords) are given to gen and one; gen passes
    them on to each `one`, which hands them to `run_one` by name."""
    options = options or {}
    ap = argparse.ArgumentParser(description=description)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("gen", "one"):
        p = sub.add_parser(name)
        p.add_argument("out", type=Path)
        p.add_argument("first", type=int)
        if name == "gen":
            p.add_argument("count", type=int)
        for option, keywords in options.items():
            p.add_argument(f"--{option}", **keywords)
    sub.add_parser("check").add_argument("out", type=Path)
    args = ap.parse_args()
    if args.command == "check":
        return check(args.out)
    given = {option: getattr(args, option) for option in options}
    if args.command == "gen":
        passed = [word for option, value in given.items() for word in (f"--{option}", value)]
        gen(script, args.out.resolve(), args.first, args.count, *passed)
    else:
        run_one(args.out, args.first, **given)
    return 0


def main() -> int:
    grammar = {"choices": ["simple", "more", "spatial", "spatial+"], "default": "more",
               "help": "simple: the first 2-D layer kinds (seeds 0-299 of the docs); more: all 2-D ones "
                       "(1000-1699); spatial: image-shaped nets, tools/caffe_fuzz_spatial.py (2000-2999); "
                       "spatial+: with its later settings (3000 on)"}
    return cli(__file__, __doc__.splitlines()[0], run_one, check, {"grammar": grammar})


if __name__ == "__main__":
    sys.exit(main())
