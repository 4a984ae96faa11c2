"""Random image folders converted by real Caffe's `convert_imageset` and by our `data convert`,
their means by `compute_image_mean` and by our `data mean`, compared record for record and byte
for byte: the measurement docs/data.md quotes.

Each case draws a few images (JPEG in colour or grey at random quality, chroma subsampling and
progressive or not; PNG grey, colour, with alpha; BMP; a PNG named .jpg; a missing file; a file
that is no image), of random or equal sizes, names with upper-case extensions, spaces and
subfolders, a list of them with random labels, and convert_imageset's options: a resize (none,
upsampling, downsampling, an exact halving), --gray, --encoded, --encode_type, --check_size.
Both tools convert the same list; the LMDBs are compared key by key and value by value, and the
mean of Caffe's LMDB is computed by both tools.

  # Caffe's tools built with OpenCV (tools/caffe_readers.py says how); no pycaffe needed
  .venv/bin/python tools/caffe_fuzz_convert.py <caffe>/build/tools 0 300
  # a case kept as a golden (tests/golden/caffe/convert_imageset, tests/golden_checks/convert_imageset.py)
  .venv/bin/python tools/caffe_fuzz_convert.py <caffe>/build/tools SEED 1 --write DIR

Outcomes per case: `equal` (the same records, bytes included), `same pixels` (the same keys,
labels and decoded pixels, other encoded bytes), `both refused` (Caffe aborted or wrote no record;
we refused), and the ones that need a look, each printed with its seed: `differ`, `refused by
us`, `converted by us`, `crashed`.  The mean: `mean equal` (bytes), `mean both refused`,
`mean differ`, `mean refused by us`, `mean by us`.  `--keep DIR` keeps every case that needs a
look (images, list, both LMDBs' records as text).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import lmdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replicate.cli import main as replicate_main  # noqa: E402
from replicate.data.image import decode_image  # noqa: E402
from replicate.proto import caffe_pb2  # noqa: E402

CAFFE = ("BVLC Caffe master 9b89154, CMake CPU_ONLY build with OpenCV 4.6.0 and libjpeg-turbo 2.1.5 "
         "(Debian 12): its convert_imageset and compute_image_mean")
KINDS = ["jpeg", "jpeg", "jpeg", "jpeg_grey", "png", "png_grey", "png_alpha", "bmp",
         "png_as_jpg", "missing", "not_an_image"]
SAMPLING = [cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]


def picture(rng: random.Random, height: int, width: int, channels: int) -> np.ndarray:
    """A smooth gradient with noise: something a JPEG encoder neither flattens nor explodes."""
    gen = np.random.default_rng(rng.randrange(2**32))
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * rng.uniform(0.5, 4) + y * rng.uniform(0.5, 4) + rng.uniform(0, 255)) % 256
                     for _ in range(channels)], axis=-1)
    noisy = base + gen.normal(0, rng.choice([0, 5, 40]), base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def image_bytes(rng: random.Random, kind: str, height: int, width: int) -> bytes | None:
    """The file's bytes for one drawn image (None: no file at all)."""
    if kind == "missing":
        return None
    if kind == "not_an_image":
        return b"this is no image\n" * rng.randint(0, 4)
    if kind.startswith("jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, rng.randint(40, 100),
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR, rng.choice(SAMPLING),
                  cv2.IMWRITE_JPEG_PROGRESSIVE, int(rng.random() < 0.3)]
        image = picture(rng, height, width, 1 if kind == "jpeg_grey" else 3)
        return cv2.imencode(".jpg", image, params)[1].tobytes()
    channels = {"png_grey": 1, "png_alpha": 4}.get(kind, 3)
    image = picture(rng, height, width, channels)
    return cv2.imencode(".bmp" if kind == "bmp" else ".png", image)[1].tobytes()


def extension(rng: random.Random, kind: str) -> str:
    if kind in ("jpeg", "jpeg_grey", "png_as_jpg"):
        return rng.choice([".jpg", ".JPEG", ".jpeg", ".JPG"])
    if kind == "bmp":
        return ".bmp"
    if kind in ("missing", "not_an_image"):
        return rng.choice([".jpg", ".png"])
    return rng.choice([".png", ".PNG"])


def draw(seed: int, root: Path) -> tuple[list[str], dict]:
    """Write a drawn case's images under `root`; its list lines and options."""
    rng = random.Random(seed)
    same = rng.random() < 0.4
    size = (rng.randint(1, 48), rng.randint(1, 48))
    lines = []
    for i in range(rng.randint(1, 8)):
        kind = rng.choice(KINDS)
        height, width = size if same else (rng.randint(1, 64), rng.randint(1, 64))
        if rng.random() < 0.05:
            height, width = rng.randint(200, 400), rng.randint(200, 400)
        name = rng.choice(["img", "IMG", "a b", "n01440764_"]) + str(i) + extension(rng, kind)
        if rng.random() < 0.3:
            name = f"sub{i % 2}/{name}"
        data = image_bytes(rng, "png" if kind == "png_as_jpg" else kind, height, width)
        if data is not None:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        lines.append(f"{name} {rng.choice([0, 1, 7, 999, rng.randint(0, 10**6)])}")
        if rng.random() < 0.05:
            lines.append("")  # a blank line: convert_imageset spends its number
    roll = rng.random()
    if roll < 0.35:
        resize = (0, 0)
    elif roll < 0.45 and not same:
        resize = (size[0] * 2, size[1] * 2)  # exact halvings only where sizes agree: harmless otherwise
    elif roll < 0.55 and same:
        resize = (max(1, size[0] // 2), max(1, size[1] // 2))
    else:
        resize = (rng.randint(1, 80), rng.randint(1, 80))
    options = {"resize": resize, "gray": rng.random() < 0.3, "encoded": rng.random() < 0.4,
               "encode_type": rng.choice(["", "", "", "png", "jpg"]), "check_size": rng.random() < 0.2}
    return lines, options


def caffe_convert(tools: Path, root: Path, listing: Path, db: Path, options: dict) -> tuple[int, str]:
    height, width = options["resize"]
    cmd = [str(tools / "convert_imageset"), f"--resize_height={height}", f"--resize_width={width}",
           "--backend=lmdb"]
    cmd += ["--gray"] * options["gray"] + ["--encoded"] * options["encoded"]
    cmd += ["--check_size"] * options["check_size"]
    if options["encode_type"]:
        cmd.append(f"--encode_type={options['encode_type']}")
    done = subprocess.run(cmd + [f"{root}/", str(listing), str(db)], capture_output=True, text=True,
                          env={"GLOG_logtostderr": "1"})
    return done.returncode, done.stderr


def ours(argv: list[str]) -> tuple[int, str]:
    """Run `python -m replicate ARGV` in this process: (exit status, what it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            rc = replicate_main(argv)
        except SystemExit as err:  # argparse's refusals
            rc = int(err.code or 0)
        except Exception as err:  # noqa: BLE001 - a crash is an outcome here
            return -1, f"{type(err).__name__}: {err}"
    return rc, out.getvalue()


def our_convert(root: Path, listing: Path, db: Path, options: dict) -> tuple[int, str]:
    height, width = options["resize"]
    argv = ["data", "convert", "--list", str(listing), "--root", str(root), "--out", str(db),
            "--resize", str(height), str(width), "--workers", "1"]
    argv += ["--gray"] * options["gray"] + ["--encoded"] * options["encoded"]
    argv += ["--check-size"] * options["check_size"]
    if options["encode_type"]:
        argv += ["--encode-type", options["encode_type"]]
    return ours(argv)


def records(db: Path) -> list[tuple[bytes, bytes]]:
    if not (db / "data.mdb").exists():
        return []
    with lmdb.open(str(db), readonly=True, lock=False) as env, env.begin() as txn:
        return [(bytes(k), bytes(v)) for k, v in txn.cursor()]


def pixels(value: bytes) -> tuple[int, bytes]:
    """A record's label and its image as Caffe's Data layer would decode it natively."""
    datum = caffe_pb2.Datum.FromString(value)
    if not datum.encoded:
        return datum.label, datum.data
    return datum.label, decode_image(datum.data, None, name="record").tobytes()


def compare(caffe: list, our: list) -> str:
    if caffe == our:
        return "equal"
    if [k for k, _ in caffe] != [k for k, _ in our]:
        return "differ"
    return "same pixels" if all(pixels(a) == pixels(b) for (_, a), (_, b) in zip(caffe, our)) else "differ"


def describe(rows: list[tuple[bytes, bytes]]) -> str:
    text = []
    for key, value in rows:
        datum = caffe_pb2.Datum.FromString(value)
        text.append(f"{key.decode()} label {datum.label} encoded {datum.encoded} "
                    f"{datum.channels}x{datum.height}x{datum.width} {len(datum.data)} bytes "
                    f"data[:16] {datum.data[:16].hex()}")
    return "\n".join(text)


def mean_outcome(tools: Path, db: Path, work: Path) -> str:
    caffe_mean, our_mean = work / "caffe_mean.binaryproto", work / "our_mean.binaryproto"
    done = subprocess.run([str(tools / "compute_image_mean"), str(db), str(caffe_mean)],
                          capture_output=True, text=True, env={"GLOG_logtostderr": "1"})
    rc, printed = ours(["data", "mean", str(db), "--out", str(our_mean)])
    caffe_ok = done.returncode == 0 and caffe_mean.exists()
    if rc not in (0, 2):
        return "mean crashed"
    if not caffe_ok:
        return "mean both refused" if rc else "mean by us"
    if rc:
        return "mean refused by us"
    return "mean equal" if caffe_mean.read_bytes() == our_mean.read_bytes() else "mean differ"


def write_golden(out: Path, seed: int, work: Path, options: dict, outcome: str, mean: str | None,
                 caffe_rc: int) -> None:
    """The case as tests/golden/caffe/convert_imageset/NNNNN: images/, list.txt, Caffe's records
    (key and value, hex) and exit status, its mean of them, the outcome ours must keep."""
    case = out / f"{seed:05d}"
    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(work / "images", case / "images")
    shutil.copy(work / "list.txt", case / "list.txt")
    if (work / "caffe_mean.binaryproto").exists():
        shutil.copy(work / "caffe_mean.binaryproto", case / "mean.binaryproto")
    meta = {"caffe": CAFFE, "seed": seed, "options": options, "caffe_rc": caffe_rc,
            "outcome": outcome, "mean": mean,
            "records": [[k.decode(), v.hex()] for k, v in records(work / "caffe_db")]}
    (case / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def run_case(tools: Path, seed: int, work: Path) -> tuple[str, str | None, str, dict, int]:
    """(outcome, mean outcome or None, what to print when it needs a look, options, Caffe's
    exit status)."""
    root = work / "images"
    root.mkdir()
    lines, options = draw(seed, root)
    listing = work / "list.txt"
    listing.write_text("".join(line + "\n" for line in lines))
    caffe_rc, caffe_log = caffe_convert(tools, root, listing, work / "caffe_db", options)
    rc, printed = our_convert(root, listing, work / "our_db", options)
    caffe, our = records(work / "caffe_db"), records(work / "our_db")
    if rc not in (0, 2):
        outcome = "crashed"
    elif caffe_rc != 0 or not caffe:
        outcome = "both refused" if rc else "converted by us"
    elif rc:
        outcome = "refused by us"
    else:
        outcome = compare(caffe, our)
    mean = mean_outcome(tools, work / "caffe_db", work) if caffe_rc == 0 and caffe else None
    detail = (f"options {options}\nlist:\n" + "\n".join(lines) + f"\nCaffe rc {caffe_rc}:\n"
              + "\n".join(caffe_log.splitlines()[-5:]) + f"\nCaffe's records:\n{describe(caffe)}"
              + f"\nours rc {rc}: {printed.strip()}\nour records:\n{describe(our)}")
    return outcome, mean, detail, options, caffe_rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tools", type=Path, help="Caffe's build/tools folder (built with OpenCV)")
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--keep", type=Path, help="keep the cases that need a look here")
    parser.add_argument("--write", type=Path, help="write every case here as a golden case")
    args = parser.parse_args()
    counts: Counter[str] = Counter()
    fine = ("equal", "same pixels", "both refused", "mean equal", "mean both refused")
    for seed in range(args.first, args.first + args.count):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            outcome, mean, detail, options, caffe_rc = run_case(args.tools, seed, work)
            if args.write:
                write_golden(args.write, seed, work, options, outcome, mean, caffe_rc)
            counts[outcome] += 1
            if mean:
                counts[mean] += 1
            for seen in (outcome, mean):
                if seen and seen not in fine:
                    print(f"seed {seed}: {seen}\n  " + detail.replace("\n", "\n  "))
            if args.keep and not {outcome, mean} <= set(fine) | {None}:
                shutil.copytree(work, args.keep / f"convert{seed:05d}", dirs_exist_ok=True)
                (args.keep / f"convert{seed:05d}" / "detail.txt").write_text(detail)
    print(dict(sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
