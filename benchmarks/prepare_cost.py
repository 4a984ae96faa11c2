"""Disk per image and decoding speed of `data prepare`, on photo-like JPEGs, for the README.

  python benchmarks/prepare_cost.py [--images 200] [--quality 90]

ImageNet itself is not here, so the inputs are ImageNet-sized JPEGs (about 500x375, quality 90)
cut at random places and scales from the one photograph that ships with matplotlib (Grace
Hopper); a JPEG of a real ImageNet photo may compress differently.  Runs `data prepare` with one
worker into a raw and a JPEG store and prints bytes per image of each store, the images per second
one core decodes, resizes and encodes (CPU time, in this process), the whole command's wall and
CPU time, then the totals extrapolated to ILSVRC2012
(1,281,167 + 50,000 images) and to the paper's ~10.4M view entries.
"""

from __future__ import annotations

import argparse
import io
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.cbook
import numpy as np
from PIL import Image

from replicate.data.store import StoreOptions, encode_chunk

IMAGENET = 1_281_167 + 50_000
VIEW_ENTRIES = 10_400_000


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "img").mkdir()
        lines = []
        for i in range(args.images):
            w, h = photo.size
            scale = rng.uniform(0.4, 1.0)
            cw, ch = int(w * scale), int(h * scale)
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            crop = photo.crop((x, y, x + cw, y + ch)).resize((500, 375), Image.BILINEAR)
            out = io.BytesIO()
            crop.save(out, "JPEG", quality=90)
            (root / "img" / f"{i}.JPEG").write_bytes(out.getvalue())
            lines.append(f"{i}.JPEG {i % 2}\n")
        (root / "train.txt").write_text("".join(lines))
        (root / "synsets.txt").write_text("n00000001\nn00000002\n")
        (root / "families.txt").write_text("n00000001 natural\nn00000002 man-made\n")
        for fmt in ("raw", "jpeg"):
            started, cpu = time.perf_counter(), _children_cpu()
            subprocess.run([sys.executable, "-m", "replicate", "data", "prepare", "--format", fmt, "--quality",
                            str(args.quality), "--train", str(root / "train.txt"), "--train-root", str(root / "img"),
                            "--synsets", str(root / "synsets.txt"), "--families", str(root / "families.txt"),
                            "--splits", "0", "--reduced", "", "--workers", "1", "--out", str(root / fmt)],
                           check=True, capture_output=True, text=True)
            wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
            store = sum(p.stat().st_size for p in (root / fmt / "store").iterdir())
            per = store / args.images
            items = [(str(root / "img" / f"{i}.JPEG"), 0, -1, str(i)) for i in range(args.images)]
            decode_cpu = time.process_time()
            encode_chunk((0, items, StoreOptions(fmt, (256, 256), args.quality)))
            rate = args.images / (time.process_time() - decode_cpu)
            print(f"{fmt}{'' if fmt == 'raw' else f' q{args.quality}'}: {per:,.0f} bytes per image "
                  f"(store files); ILSVRC2012 store {per * IMAGENET / 1e9:.1f} GB + views "
                  f"{8 * VIEW_ENTRIES / 1e9:.2f} GB; decode+resize+encode {rate:.0f} images/s per core (CPU time); "
                  f"the whole `data prepare` of {args.images} images, one worker: {wall:.1f} s wall, {cpu:.1f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
