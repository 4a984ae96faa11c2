"""A miniature ILSVRC2012 in its distributed form: the three files a user downloads.

- `ILSVRC2012_img_train.tar`: one `<wnid>.tar` per class (40 of the real 1,000, every 25th; their
  list is `synsets.txt` beside, for --synsets), each holding that
  class's JPEGs (`<wnid>_<n>.JPEG`); class 0 also holds ImageNet's odd files: a CMYK JPEG, a
  greyscale JPEG, a PNG named .JPEG, and a truncated JPEG (the bad image the build must survive);
- `ILSVRC2012_img_val.tar`: flat `ILSVRC2012_val_<8 digits>.JPEG`, one per class, in an order
  unrelated to the classes;
- `ILSVRC2012_devkit_t12.tar.gz`: `data/meta.mat` built like the real one (1,860 synsets: the
  1,000 classes with ILSVRC2012_IDs 1..1000 in WordNet order, not sorted-wnid order, and 860 inner
  nodes with children, words, gloss, wordnet_height, num_train_images: the miniature's own counts
  for its 40 classes) and the validation ground truth as ILSVRC2012_IDs.

Images are tiny (12x10) so the whole thing builds in a fraction of a second.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from replicate.data.families import ILSVRC12_WNIDS

ALL_WNIDS = ILSVRC12_WNIDS.read_text().split()
WNIDS = ALL_WNIDS[::25]
ODD = {"cmyk": "CMYK JPEG", "gray": "greyscale JPEG", "png": "PNG named .JPEG"}


@dataclass(frozen=True)
class Ilsvrc:
    root: Path
    train_tar: Path
    val_tar: Path
    devkit: Path
    synsets: Path
    ids: list[int]  # ILSVRC2012_ID of each of the 1,000 sorted-wnid classes
    train: list[tuple[str, int]]  # Caffe's train.txt entries (the truncated image included)
    val: list[tuple[str, int]]


def _jpeg(seed: int, mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt, quality=90)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def meta_mat(ids: list[int], train_counts: dict[str, int] | None = None) -> bytes:
    """A devkit meta.mat: `synsets`, 1,860 records with the real fields; leaves first (IDs 1..1000);
    num_train_images from `train_counts` (wnid -> count) where given."""
    train_counts = train_counts or {}
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    records = np.zeros((1860, 1), dtype=[(f, "O") for f in fields])
    by_id = sorted(range(1000), key=lambda label: ids[label])
    for label in by_id:
        records[ids[label] - 1, 0] = (ids[label], ALL_WNIDS[label], f"words {label}", "a gloss", 0,
                                      np.zeros((1, 0), np.uint8), 0,
                                      train_counts.get(ALL_WNIDS[label], 732 + label % 569))
    for k in range(860):  # inner nodes: each the parent of a few leaves or of earlier inner nodes
        node_id = 1001 + k
        children = [1 + (3 * k + j) % 1000 for j in range(3)] if k < 700 else [1001 + k - 700, 1002 + k - 700]
        records[node_id - 1, 0] = (node_id, f"n9{k:07d}", f"inner {k}", "an inner node", len(children),
                                   np.asarray(children, np.uint16), 1 + k % 18, 1300 * len(children))
    out = io.BytesIO()
    scipy.io.savemat(out, {"synsets": records})
    return out.getvalue()


def make_ilsvrc(root: Path) -> Ilsvrc:
    root.mkdir(parents=True, exist_ok=True)
    ids = (np.random.default_rng(7).permutation(1000) + 1).tolist()
    (root / "synsets.txt").write_text("".join(f"{w}\n" for w in WNIDS))
    train: list[tuple[str, int]] = []
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as outer:
        for label, wnid in enumerate(WNIDS):
            files = {f"{wnid}_{label + 1}.JPEG": _jpeg(label)}
            if label == 0:
                files[f"{wnid}_cmyk.JPEG"] = _jpeg(1000, "CMYK")
                files[f"{wnid}_gray.JPEG"] = _jpeg(1001, "L")
                files[f"{wnid}_png.JPEG"] = _jpeg(1002, fmt="PNG")
                files[f"{wnid}_truncated.JPEG"] = _jpeg(1003)[:200]
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for name in reversed(files):  # the tar's order is not the list's
                    _add(tar, name, files[name])
            _add(outer, f"{wnid}.tar", inner.getvalue())
            train += [(f"{wnid}/{name}", label) for name in sorted(files)]
    order = np.random.default_rng(8).permutation(len(WNIDS))
    val = []
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as tar:
        for n, label in enumerate(order.tolist(), start=1):
            name = f"ILSVRC2012_val_{n:08d}.JPEG"
            _add(tar, name, _jpeg(2000 + n))
            val.append((name, label))
    truth = "".join(f"{ids[ALL_WNIDS.index(WNIDS[label])]}\n" for _, label in val).encode()
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        counts = {wnid: sum(name.startswith(f"{wnid}/") for name, _ in train) for wnid in WNIDS}
        _add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", meta_mat(ids, counts))
        _add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)
        _add(tar, "ILSVRC2012_devkit_t12/readme.txt", b"devkit\n")
    return Ilsvrc(root, root / "ILSVRC2012_img_train.tar", root / "ILSVRC2012_img_val.tar",
                  root / "ILSVRC2012_devkit_t12.tar.gz", root / "synsets.txt", ids, train, val)


def extract(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
