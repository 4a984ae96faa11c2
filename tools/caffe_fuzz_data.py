"""Random Data layers over random LMDBs of raw or encoded Datums, run by real Caffe and by our
engine, and compared bit for bit: the measurement docs/fidelity.md quotes.

Each case draws 1-9 records (1, 2, 3 or 4 channels, 2-12 pixels a side; uint8 `data`, or
`float_data`, or both), a transform_param (centre crop or none, a mean file, one or one-per-channel
mean values, a scale, now and then both means, a crop larger than an image or a mean of another
size), a batch size that may exceed the records (Caffe wraps around within a batch), one or two
tops, the TEST phase or TRAIN without crop and mirror (Caffe's only deterministic TRAIN), and now
and then records of several sizes; now and then the records are PNG or JPEG files of the same
pixels (Pillow's), decoded natively or with force_color/force_gray, and some of those are read
by an ImageData layer from a list of the files instead (a root folder, names with a space and a
subfolder, new_height/new_width or none, is_color).  Caffe's batches 1-3 are recorded; ours must give the same
shapes and the same bits, from the layer and from the GPU path's gather (on the CPU here).

  # with pycaffe (tools/caffe_readers.py says how it was built) and Debian's python3-lmdb; one
  # process per case, so that a case Caffe refuses aborts only its own
  GLOG_minloglevel=2 PYTHONPATH=<caffe>/python /usr/bin/python3 tools/caffe_fuzz_data.py gen OUT 0 1000
  .venv/bin/python tools/caffe_fuzz_data.py check OUT
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections import Counter
from pathlib import Path

import caffe_fuzz  # this folder, on sys.path as the script's own: gen's one-process-per-case runner

BATCHES = 3


def draw(seed: int) -> dict:
    """The case as plain values (both sides build from it; only Caffe's side writes files)."""
    rng = random.Random(seed)
    channels = rng.choice([1, 3, 3, 3, 4, 2])
    height, width = rng.randint(2, 12), rng.randint(2, 12)
    crop = 0
    if rng.random() < 0.6:
        crop = rng.randint(1, min(height, width)) if rng.random() < 0.95 else max(height, width) + 1
    sizes = "same"
    if rng.random() < 0.1:
        sizes = "vary"
    kind = rng.choice(["uint8"] * 6 + ["float"] * 2 + ["both"])
    records = []
    for _ in range(rng.randint(1, 9)):
        h, w = height, width
        if sizes == "vary" and rng.random() < 0.5:
            h, w = rng.randint(max(crop, 2), 12), rng.randint(max(crop, 2), 12)
        count = channels * h * w
        record = {"c": channels, "h": h, "w": w, "label": rng.randint(-1, 20)}
        if kind in ("uint8", "both"):
            record["data"] = [rng.randrange(256) for _ in range(count)]
        if kind in ("float", "both"):
            record["float_data"] = [round(rng.uniform(-300, 300), rng.choice([0, 2, 6])) for _ in range(count)]
        records.append(record)
    transform = {}
    if crop:
        transform["crop_size"] = crop
    mean = rng.choice(["none", "file", "file", "values", "values"])
    if mean == "file" or rng.random() < 0.03:
        mh, mw = (height, width) if rng.random() < 0.95 else (height + 1, width)
        transform["mean_file"] = {"shape": [1, channels, mh, mw],
                                  "data": [round(rng.uniform(0, 255), 3) for _ in range(channels * mh * mw)]}
    if mean == "values" or rng.random() < 0.03:
        count = rng.choice([1, channels, channels, channels + 1])
        transform["mean_value"] = [rng.choice([104.0, 117.0, 123.0, 0.5, 127.5, -3.25]) for _ in range(count)]
    if rng.random() < 0.6:
        transform["scale"] = rng.choice([0.5, 0.00390625, 2.0, 0.017, 1.0, 0.1])
    if rng.random() < 0.2:
        transform["mirror"] = False
    phase = rng.choice(["TEST", "TEST", "TRAIN"]) if not crop else "TEST"
    if rng.random() < 0.1:  # Caffe's are for encoded records; a raw one logs an error and ignores them
        transform[rng.choice(["force_color", "force_gray"])] = True
    case = {"seed": seed, "records": records, "transform": transform, "phase": phase,
            "batch_size": rng.choice([1, 2, 3, 4, 5, 7, 10]), "tops": rng.choice([1, 2, 2, 2])}
    # Drawn last, so that the cases of earlier draws keep their seeds: encoded records (PNG or
    # JPEG of the same pixels, decoded by Caffe's OpenCV), where the pixels can be an image.
    formats = [f for f, allowed in (("png", (1, 3, 4)), ("jpg", (1, 3))) if channels in allowed]
    if kind == "uint8" and formats and rng.random() < 0.4:
        case["encoding"] = rng.choice(formats)
        if rng.random() < 0.3:
            transform[rng.choice(["force_color", "force_gray"])] = True
        if rng.random() < 0.4:  # the same files read by an ImageData layer from a list instead
            size = (0, 0) if rng.random() < 0.4 else (rng.randint(1, 14), rng.randint(1, 14))
            case["image_data"] = {"new_height": size[0], "new_width": size[1], "is_color": rng.random() < 0.7}
    return case


def net_text(case: dict) -> str:
    lines = []
    for key, value in case["transform"].items():
        if key == "mean_file":
            lines.append('mean_file: "mean.binaryproto"')
        elif key == "mean_value":
            lines += [f"mean_value: {v}" for v in value]
        elif isinstance(value, bool):
            lines.append(f"{key}: {str(value).lower()}")
        else:
            lines.append(f"{key}: {value}")
    tops = ' top: "label"' if case["tops"] == 2 else ""
    if "image_data" in case:
        image = case["image_data"]
        source = (f'image_data_param {{ source: "list.txt" root_folder: "images/" batch_size: {case["batch_size"]} '
                  f'new_height: {image["new_height"]} new_width: {image["new_width"]} '
                  f'is_color: {str(image["is_color"]).lower()} }}')
    else:
        source = f'data_param {{ source: "lmdb" batch_size: {case["batch_size"]} backend: LMDB }}'
    return (f'name: "data{case["seed"]:05d}"\n'
            f'layer {{ name: "data" type: "{"ImageData" if "image_data" in case else "Data"}" top: "data"{tops}\n'
            f'  transform_param {{ {" ".join(lines)} }}\n'
            f'  {source} }}\n')


def encoded(record: dict, encoding: str) -> bytes:
    """The record's pixels (CHW) as a PNG or JPEG file, written with Pillow."""
    import io

    import numpy as np
    from PIL import Image

    hwc = np.array(record["data"], np.uint8).reshape(record["c"], record["h"], record["w"]).transpose(1, 2, 0)
    image = Image.fromarray(hwc[:, :, 0] if record["c"] == 1 else hwc, {1: "L", 3: "RGB", 4: "RGBA"}[record["c"]])
    out = io.BytesIO()
    image.save(out, format="PNG" if encoding == "png" else "JPEG", quality=90)
    return out.getvalue()


def run_one(out: Path, seed: int) -> None:
    """The case's files, then Caffe's batches: LMDB keys in record order, the mean as a BlobProto
    with legacy dims (as compute_image_mean writes it)."""
    import caffe
    import lmdb
    import numpy as np
    from caffe.proto import caffe_pb2

    case = draw(seed)
    folder = out / f"data{seed:05d}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = lmdb.open(str(folder / "lmdb"), map_size=1 << 22, subdir=True)
    with env.begin(write=True) as txn:
        for i, record in enumerate(case["records"]):
            datum = caffe_pb2.Datum(channels=record["c"], height=record["h"], width=record["w"], label=record["label"])
            if "encoding" in case:
                datum = caffe_pb2.Datum(data=encoded(record, case["encoding"]), label=record["label"], encoded=True)
            elif "data" in record:
                datum.data = bytes(record["data"])
            datum.float_data.extend(record.get("float_data", []))
            txn.put(f"{i:08d}".encode(), datum.SerializeToString())
    env.close()
    if "image_data" in case:  # the records' files, named as a list with a space and a subfolder
        names = [f"{'sub/' if i % 2 else ''}img {i}.{case['encoding']}" for i in range(len(case["records"]))]
        for name, record in zip(names, case["records"]):
            (folder / "images" / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / "images" / name).write_bytes(encoded(record, case["encoding"]))
        (folder / "list.txt").write_text("".join(f"{n} {r['label']}\n" for n, r in zip(names, case["records"])))
    if "mean_file" in case["transform"]:
        n, c, h, w = case["transform"]["mean_file"]["shape"]
        blob = caffe_pb2.BlobProto(num=n, channels=c, height=h, width=w)
        blob.data.extend(case["transform"]["mean_file"]["data"])
        (folder / "mean.binaryproto").write_bytes(blob.SerializeToString())
    (folder / "net.prototxt").write_text(net_text(case))
    (folder / "meta.json").write_text(json.dumps({"seed": seed, "phase": case["phase"], "batches": BATCHES}))
    caffe.set_mode_cpu()
    os.chdir(folder)  # Caffe reads source and mean_file against its working directory
    net = caffe.Net("net.prototxt", getattr(caffe, case["phase"]))  # a case Caffe refuses aborts here
    arrays = {}
    for k in range(1, BATCHES + 1):
        net.forward()
        for top in ("data", "label")[: case["tops"]]:
            arrays[f"out/batch{k}/{top}"] = net.blobs[top].data.copy()
    np.savez_compressed(folder / "arrays.npz", **arrays)


def ours(folder: Path) -> list[dict] | str:
    """Our layer's batches, and the GPU path's gather of the same records on the CPU, as
    [{top: array}] per batch; or the reason we refuse the case."""
    import torch

    from replicate.data.loader import GpuLoader
    from replicate.errors import ReplicateError
    from replicate.io.prototxt import read_net_text
    from replicate.layers.base import layer_class
    from replicate.proto import caffe_pb2

    meta = json.loads((folder / "meta.json").read_text())
    (param,) = read_net_text(folder / "net.prototxt").layer
    if param.type == "ImageData":
        param.image_data_param.source = str(folder / param.image_data_param.source)
        param.image_data_param.root_folder = f"{folder}/{param.image_data_param.root_folder}"
    else:
        param.data_param.source = str(folder / param.data_param.source)
    if param.transform_param.mean_file:
        param.transform_param.mean_file = str(folder / param.transform_param.mean_file)
    batches = []
    try:
        layer = layer_class(param)(param, caffe_pb2.Phase.Value(meta["phase"]), [])
        loader = GpuLoader(layer.maker, torch.device("cpu"), ahead=0)
        try:
            for _ in range(meta["batches"]):
                tops = layer.forward()
                batch = {name: t.numpy() for name, t in zip(param.top, tops)}
                batch["gathered"] = next(loader)[0].numpy()
                batch["shape"] = layer.top_shapes[0]
                batches.append(batch)
        finally:
            loader.close()
            layer.close()
    except ReplicateError as err:
        return str(err)
    return batches


def check(out: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np

    refused = caffe_fuzz.refused_seeds(out)
    tally: Counter[str] = Counter()
    for folder in sorted(out.glob("data*")):
        seed = int(folder.name[4:])
        result = ours(folder)
        if seed in refused:
            tally["refused by both" if isinstance(result, str) else "REFUSED BY CAFFE, RUN BY US"] += 1
            if not isinstance(result, str):
                print(folder.name, "Caffe refused:", next(r["caffe_error"] for r in caffe_fuzz._refused(out) if r["seed"] == seed))
            continue
        if isinstance(result, str):
            tally["run by Caffe, refused by us"] += 1
            print(folder.name, "refused by us:", result)
            continue
        with np.load(folder / "arrays.npz") as arrays:
            problems, reshaped = [], False
            for k, batch in enumerate(result, 1):
                for top in ("data", "label"):
                    key = f"out/batch{k}/{top}"
                    if key not in arrays.files:
                        continue
                    theirs = arrays[key]
                    candidates = [(top, batch[top])] + ([("gathered", batch["gathered"])] if top == "data" else [])
                    for what, mine in candidates:
                        if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
                            worst = (float(np.abs(mine.astype(np.float64) - theirs).max())
                                     if mine.shape == theirs.shape else None)
                            problems.append(f"batch{k} {what}: shape {mine.shape} vs {theirs.shape}, max diff {worst}")
                reshaped |= tuple(batch["data"].shape) != tuple(batch["shape"])
        if problems:
            tally["RUN BY BOTH, NOT EQUAL"] += 1
            print(folder.name, "; ".join(problems[:3]))
        elif reshaped:  # Caffe reshapes the net; our CompiledNet refuses a batch of another shape
            tally["run by both, bit-identical, a batch of another shape than the first"] += 1
        else:
            tally["run by both, bit-identical"] += 1
    print(dict(sorted(tally.items())))
    return 1 if any(key.isupper() for key in tally) else 0


def main() -> int:
    return caffe_fuzz.cli(__file__, __doc__.splitlines()[0], run_one, check)


if __name__ == "__main__":
    sys.exit(main())
