"""Random legacy nets (V0 and V1 text, and current nets with `input:` fields) upgraded by real
Caffe's `upgrade_net_proto_text` and by ours (replicate.io.upgrade.upgrade_net), compared message
for message: the measurement docs/fidelity.md quotes.

Each case is a NetParameter drawn field by field from the proto's own descriptors: V0 nets
(`layers { layer { type: "conv" ... } }`, padding layers, each V0 parameter mostly on a type it
applies to and sometimes on one it does not, unknown types now and then), V1 nets (every V1 layer
type, blobs_lr/weight_decay/param names/share modes/loss weights/include rules, parameter messages
filled at random, the deprecated data-transform fields in data layers' own messages, a V0 layer
mixed in or a current `layer` beside `layers` now and then), and either kind with `input:` +
`input_dim`/`input_shape` (sometimes miscounted).

  # Caffe's tools built (tools/caffe_readers.py says how); no pycaffe needed
  .venv/bin/python tools/caffe_fuzz_upgrade.py <caffe>/build/tools 0 2000

Outcomes: `equal` (Caffe upgraded without complaint and so did we, to the same message),
`both refused` (Caffe aborted or reported errors, we raised ReplicateError), and the ones that
need a look, each printed with its seed: `differ`, `refused by us` (Caffe upgraded cleanly),
`upgraded by us` (Caffe reported errors or aborted), `crashed` (ours raised something other than
ReplicateError).  `--keep DIR` writes every case that needs a look (input, Caffe's output and
log, ours) for reading.

BatchNorm layers with 3 `param` blocks (UpgradeNetBatchNorm) are drawn too: BVLC master sets
their lr_mult and decay_mult to 0, as ours does; the older brocolli-caffe 9.0.2 fork clears them,
so against that build they show as `differ`.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from google.protobuf import descriptor, text_format

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replicate.errors import ReplicateError  # noqa: E402
from replicate.io.upgrade import upgrade_net  # noqa: E402
from replicate.proto import caffe_pb2  # noqa: E402

FD = descriptor.FieldDescriptor
V1 = caffe_pb2.V1LayerParameter
STRINGS = ["x", "db/train_lmdb", "mean.binaryproto", "gaussian", "constant", "a.h5"]
FLOATS = [0.5, 1.0, 2.0, 0.001, -1.5, 0.0001, 10.0]

# V0 parameter -> the V0 types it applies to (Caffe's UpgradeV0LayerParameter): the draw mostly
# respects it, so that most V0 nets upgrade; the rest exercise the errors.
V0_APPLIES = {
    "num_output": ["conv", "innerproduct"], "biasterm": ["conv", "innerproduct"],
    "weight_filler": ["conv", "innerproduct"], "bias_filler": ["conv", "innerproduct"],
    "pad": ["conv", "pool", "padding"], "kernelsize": ["conv", "pool"], "group": ["conv"],
    "stride": ["conv", "pool"], "pool": ["pool"], "dropout_ratio": ["dropout"],
    "local_size": ["lrn"], "alpha": ["lrn"], "beta": ["lrn"], "k": ["lrn"],
    "source": ["data", "hdf5_data", "images", "window_data", "infogain_loss"],
    "batchsize": ["data", "hdf5_data", "images", "window_data"], "rand_skip": ["data", "images"],
    "shuffle_images": ["images"], "new_height": ["images"], "new_width": ["images"],
    "concat_dim": ["concat"], "det_fg_threshold": ["window_data"], "det_bg_threshold": ["window_data"],
    "det_fg_fraction": ["window_data"], "det_context_pad": ["window_data"],
    "det_crop_mode": ["window_data"], "hdf5_output_param": ["hdf5_output"],
}
V0_ANY = ["scale", "meanfile", "cropsize", "mirror", "blobs_lr", "weight_decay", "new_num", "new_channels"]
V0_TYPES = sorted({t for types in V0_APPLIES.values() for t in types} | {
    "accuracy", "bnll", "euclidean_loss", "flatten", "im2col", "multinomial_logistic_loss", "relu",
    "sigmoid", "softmax", "softmax_loss", "split", "tanh"})


def scalar(rng: random.Random, field: FD) -> object:
    if field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return rng.choice(FLOATS)
    if field.type == FD.TYPE_BOOL:
        return rng.random() < 0.5
    if field.type == FD.TYPE_STRING:
        return rng.choice(STRINGS)
    if field.type == FD.TYPE_ENUM:
        return rng.choice(field.enum_type.values).number
    if field.type in (FD.TYPE_INT32, FD.TYPE_INT64, FD.TYPE_SINT32):
        return rng.choice([0, 1, 2, 3, 5, -1])
    return rng.choice([0, 1, 2, 3, 5])


def fill(rng: random.Random, message, depth: int = 0, fields: list[str] | None = None) -> None:
    """Set 1-3 random fields of `message` (or the named ones), recursing into messages."""
    names = fields or rng.sample([f.name for f in message.DESCRIPTOR.fields],
                                 min(len(message.DESCRIPTOR.fields), rng.randint(1, 3)))
    for name in names:
        field = message.DESCRIPTOR.fields_by_name[name]
        count = rng.randint(1, 3) if field.is_repeated else 1
        for _ in range(count):
            if field.type == FD.TYPE_MESSAGE:
                if depth >= 2 or field.message_type.name in ("NetParameter", "V1LayerParameter",
                                                              "V0LayerParameter", "LayerParameter"):
                    break
                sub = getattr(message, name).add() if field.is_repeated else getattr(message, name)
                sub.SetInParent()
                if sub.DESCRIPTOR.fields:
                    fill(rng, sub, depth + 1)
            elif field.is_repeated:
                getattr(message, name).append(scalar(rng, field))
            else:
                setattr(message, name, scalar(rng, field))


def wire(rng: random.Random, conn, blobs: list[str], name: str) -> None:
    """Bottoms from the blobs so far, a new top (or in place)."""
    for _ in range(rng.choice([0, 1, 1, 1, 2])):
        if blobs:
            conn.bottom.append(rng.choice(blobs))
    if conn.bottom and rng.random() < 0.15:
        conn.top.append(conn.bottom[0])
    elif rng.random() < 0.9:
        conn.top.append(name)
        blobs.append(name)


def add_inputs(rng: random.Random, net: caffe_pb2.NetParameter, blobs: list[str]) -> None:
    if rng.random() < 0.5:
        return
    count = rng.choice([1, 1, 2])
    for i in range(count):
        net.input.append(f"in{i}")
        blobs.append(f"in{i}")
    kind = rng.choice(["dim", "dim", "shape", "none"])
    miscount = rng.random() < 0.1
    if kind == "dim":
        net.input_dim.extend(rng.choice([1, 2, 3]) for _ in range(4 * count + (rng.choice([-1, 1]) if miscount else 0)))
    elif kind == "shape":
        for _ in range(count + (rng.choice([-1, 1]) if miscount else 0)):
            net.input_shape.add().dim.extend(rng.choice([1, 2, 3]) for _ in range(rng.randint(1, 4)))


def v0_net(rng: random.Random) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    blobs: list[str] = []
    if rng.random() < 0.8:
        net.name = "v0"
    add_inputs(rng, net, blobs)
    if rng.random() < 0.3:
        net.force_backward = rng.random() < 0.5
    for i in range(rng.randint(1, 7)):
        conn = net.layers.add()
        kind = rng.choice(V0_TYPES + ["padding", "padding"]) if rng.random() < 0.97 else "no_such_type"
        layer = conn.layer
        layer.name, layer.type = f"l{i}", kind
        applicable = [f for f, types in V0_APPLIES.items() if kind in types]
        names = set(rng.sample(applicable, min(len(applicable), rng.randint(0, 4))))
        names |= set(rng.sample(V0_ANY, rng.choice([0, 0, 1, 2])))
        if rng.random() < 0.1:
            names.add(rng.choice(sorted(V0_APPLIES)))
        if rng.random() < 0.1:
            layer.blobs.add().CopyFrom(caffe_pb2.BlobProto(num=1, channels=1, height=1, width=2, data=[1.0, 2.0]))
        if names:
            fill(rng, layer, fields=sorted(names))
        if kind == "padding" and rng.random() < 0.9:
            conn.bottom.append(rng.choice(blobs) if blobs else "nowhere")
            conn.top.append(f"l{i}")
            blobs.append(f"l{i}")
        else:
            wire(rng, conn, blobs, f"l{i}")
    if rng.random() < 0.05:
        net.layers[rng.randrange(len(net.layers))].bottom.append("unknown_blob")
    if rng.random() < 0.05:  # a V1 layer (no `layer` field) among the V0 ones
        extra = net.layers.add(name="v1", type=V1.RELU, top=["v1"])
        extra.bottom.extend(blobs[-1:])
    return net


def v1_net(rng: random.Random) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    blobs: list[str] = []
    if rng.random() < 0.8:
        net.name = "v1"
    add_inputs(rng, net, blobs)
    if rng.random() < 0.2:
        fill(rng, net, fields=rng.sample(["force_backward", "debug_info", "state"], rng.randint(1, 2)))
    messages = [f.name for f in V1.DESCRIPTOR.fields if f.name.endswith("_param")]
    data_kinds = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param", V1.WINDOW_DATA: "window_data_param"}
    for i in range(rng.randint(1, 7)):
        layer = net.layers.add()
        if rng.random() < 0.9:
            layer.name = f"l{i}"
        if rng.random() < 0.95:
            layer.type = rng.choice(V1.LayerType.DESCRIPTOR.values).number
        if layer.type in data_kinds or rng.random() < 0.1:
            kind = rng.choice(sorted(data_kinds)) if layer.type not in data_kinds else layer.type
            if layer.type not in data_kinds and rng.random() < 0.5:
                layer.type = kind
            own = getattr(layer, data_kinds[kind])
            fill(rng, own, fields=rng.sample(["scale", "mean_file", "crop_size", "mirror", "source", "batch_size"],
                                             rng.randint(0, 3)) or None)
            if rng.random() < 0.3:
                fill(rng, layer.transform_param)
        wire(rng, layer, blobs, f"l{i}")
        for name in ("blobs_lr", "weight_decay", "param", "blob_share_mode", "loss_weight"):
            if rng.random() < 0.3:
                fill(rng, layer, fields=[name])
        for name in ("include", "exclude"):
            if rng.random() < 0.15:
                fill(rng, layer, fields=[name])
        for name in rng.sample(messages, rng.choice([0, 1, 1, 2])):
            getattr(layer, name).SetInParent()
            fill(rng, getattr(layer, name))
        if rng.random() < 0.1:
            layer.blobs.add().CopyFrom(caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[2]), data=[1.0, 2.0]))
        if rng.random() < 0.03:  # a V0 layer inside a V1 one
            layer.layer.name, layer.layer.type = f"v0_{i}", "relu"
    if rng.random() < 0.03:  # a current `layer` beside the deprecated `layers`
        net.layer.add(name="current", type="ReLU")
    return net


def current_net(rng: random.Random) -> caffe_pb2.NetParameter:
    """A current-format net that still uses `input:` fields (the upgrade turns them into a layer)."""
    net = caffe_pb2.NetParameter(name="v2")
    blobs: list[str] = []
    add_inputs(rng, net, blobs)
    if not net.input:
        net.input.append("data")
        net.input_dim.extend([1, 3, 4, 4])
        blobs.append("data")
    for i in range(rng.randint(1, 4)):
        layer = net.layer.add(name=f"l{i}", type=rng.choice(["ReLU", "Convolution", "Pooling", "BatchNorm"]))
        wire(rng, layer, blobs, f"l{i}")
        if layer.type == "BatchNorm" and rng.random() < 0.5:
            for _ in range(3):  # the 3-param form that UpgradeNetBatchNorm rewrites
                layer.param.add(lr_mult=rng.choice([0.0, 1.0, 2.0]), decay_mult=rng.choice([0.0, 1.0]))
        elif rng.random() < 0.3:
            fill(rng, layer, fields=["param"])
    return net


def draw(seed: int) -> caffe_pb2.NetParameter:
    rng = random.Random(seed)
    return rng.choice([v0_net, v0_net, v1_net, v1_net, current_net])(rng)


def caffe_upgrade(tool: Path, text: str, work: Path) -> tuple[str, int, str]:
    """(Caffe's output text or "", exit status (negative: killed by that signal), its log)."""
    source, target = work / "in.prototxt", work / "out.prototxt"
    source.write_text(text)
    target.unlink(missing_ok=True)
    done = subprocess.run([str(tool), str(source), str(target)], capture_output=True, text=True,
                          timeout=60, env={"GLOG_minloglevel": "0", "GLOG_logtostderr": "1"})
    out = target.read_text() if target.exists() else ""
    return out, done.returncode, done.stderr


def classify(text: str, caffe_out: str, rc: int, log: str) -> tuple[str, str]:
    net = caffe_pb2.NetParameter()
    text_format.Parse(text, net)
    try:
        ours = upgrade_net(net)
    except ReplicateError as err:
        return ("both refused" if rc != 0 else "refused by us"), str(err)
    except Exception as err:  # noqa: BLE001 - a crash of ours is the finding
        return "crashed", f"{type(err).__name__}: {err}"
    if rc != 0:
        return "upgraded by us", text_format.MessageToString(ours)
    theirs = caffe_pb2.NetParameter()
    text_format.Parse(caffe_out, theirs)
    return ("equal" if ours == theirs else "differ"), text_format.MessageToString(ours)


def write_case(folder: Path, seed: int, text: str, caffe_out: str, rc: int, log: str, outcome: str,
               ours: str) -> None:
    """`NNNNN.in.prototxt`, Caffe's `NNNNN.caffe.prototxt` (what it wrote, also after reporting
    errors) and the case's entry in cases.json: Caffe's exit status, its first error line, and
    what ours must do (`equal`, or `refused` with our reason)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{seed:05d}.in.prototxt").write_text(text)
    if caffe_out:
        (folder / f"{seed:05d}.caffe.prototxt").write_text(caffe_out)
    errors = [line.split("] ", 1)[1] for line in log.splitlines() if line[:1] in "EF" and "] " in line
              and "already in latest proto format" not in line]
    if outcome not in ("equal", "both refused", "refused by us"):
        raise SystemExit(f"seed {seed}: {outcome}, not a golden case")
    entry = {"caffe_rc": rc, "caffe_error": errors[0] if errors else None,
             "expect": "equal" if outcome == "equal" else "refused"}
    if outcome != "equal":
        entry["ours"] = ours
    index = folder / "cases.json"
    cases = json.loads(index.read_text()) if index.exists() else {}
    cases[f"{seed:05d}"] = entry
    index.write_text(json.dumps(dict(sorted(cases.items())), indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tools", type=Path, help="Caffe's build/tools folder")
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--keep", type=Path, help="write the cases that need a look here")
    parser.add_argument("--write", type=Path,
                        help="write every drawn case here as a golden upgrade case (tests/test_io_upgrade.py)")
    args = parser.parse_args()
    tool = args.tools / "upgrade_net_proto_text"
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in range(args.first, args.first + args.count):
            text = text_format.MessageToString(draw(seed))
            caffe_out, rc, log = caffe_upgrade(tool, text, work)
            if rc == 2 and "has no field named" in log:  # a field this Caffe's proto lacks
                counts["not in this Caffe's proto"] += 1
                continue
            if rc == 2:
                raise SystemExit(f"seed {seed}: Caffe could not parse the drawn net:\n{log}\n{text}")
            outcome, ours = classify(text, caffe_out, rc, log)
            counts[outcome] += 1
            if args.write:
                write_case(args.write, seed, text, caffe_out, rc, log, outcome, ours)
            if outcome not in ("equal", "both refused"):
                print(f"seed {seed}: {outcome} (Caffe rc {rc}): {ours.splitlines()[0] if ours else ''}")
                if args.keep:
                    case = args.keep / f"upgrade{seed:05d}"
                    case.mkdir(parents=True, exist_ok=True)
                    (case / "in.prototxt").write_text(text)
                    (case / "caffe.prototxt").write_text(caffe_out)
                    (case / "caffe.log").write_text(log)
                    (case / "ours.txt").write_text(ours)
    print(dict(sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
