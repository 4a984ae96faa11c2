"""Real Caffe's `convert_imageset` on a drawn image folder, and its `compute_image_mean` of what
it wrote (tools/caffe_fuzz_convert.py --write; `caffe/convert_imageset/NNNNN`): our `data
convert` with the same options writes the same records, keys and value bytes, or refuses where
Caffe aborted or wrote nothing; our `data mean` of Caffe's records is its mean file, byte for
byte, or refuses where it aborted.  Through the command line, as a user runs them."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import lmdb
import torch

from golden_checks._compare import CPU
from replicate.cli import main

#: Both are host tools: the GPU tier has nothing to run here.
DEVICE_FREE = True


def handles(case_name: str) -> bool:
    return case_name.startswith("convert_imageset/")


def _records(db: Path) -> list[tuple[bytes, bytes]]:
    with lmdb.open(str(db), readonly=True, lock=False) as env, env.begin() as txn:
        return [(bytes(k), bytes(v)) for k, v in txn.cursor()]


def _convert_argv(case_dir: Path, options: dict, out: Path) -> list[str]:
    argv = ["data", "convert", "--list", str(case_dir / "list.txt"), "--root", str(case_dir / "images"),
            "--out", str(out), "--resize", *map(str, options["resize"]), "--workers", "1"]
    argv += ["--gray"] * options["gray"] + ["--encoded"] * options["encoded"]
    argv += ["--check-size"] * options["check_size"]
    return argv + (["--encode-type", options["encode_type"]] if options["encode_type"] else [])


def check(case_dir: Path, device: torch.device = CPU) -> None:
    meta = json.loads((case_dir / "meta.json").read_text())
    caffe = [(key.encode(), bytes.fromhex(value)) for key, value in meta["records"]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rc = main(_convert_argv(case_dir, meta["options"], work / "db"))
        if meta["outcome"] == "both refused":
            assert rc == 2 and not (work / "db").exists(), "Caffe refused this conversion; ours did not"
        else:
            assert meta["outcome"] == "equal", meta["outcome"]
            assert rc == 0
            ours = _records(work / "db")
            assert [k for k, _ in ours] == [k for k, _ in caffe], "keys differ from convert_imageset's"
            for (key, value), (_, expected) in zip(ours, caffe):
                assert value == expected, f"record {key.decode()} differs from convert_imageset's"
        if meta["mean"] is None:
            return
        with lmdb.open(str(work / "caffe_db"), map_size=1 << 26) as env, env.begin(write=True) as txn:
            for key, value in caffe:
                txn.put(key, value)
        rc = main(["data", "mean", str(work / "caffe_db"), "--out", str(work / "mean.binaryproto")])
        if meta["mean"] == "mean equal":
            assert rc == 0
            assert (work / "mean.binaryproto").read_bytes() == (case_dir / "mean.binaryproto").read_bytes()
        else:
            assert meta["mean"] == "mean both refused" and rc == 2
