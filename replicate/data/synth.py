"""A generated stand-in for ImageNet: small images in ILSVRC2012's layout, two families of classes.

The demo needs a dataset that a tiny CaffeNet-like net learns in a few hundred iterations on a CPU
and that has the structure the paper's experiments probe.  Every class draws two colours, noise
and a pattern of one *kind*; classes of one family share their kinds' low-level ingredients:

- natural: fibres (oriented filtered noise), blobs (thresholded smooth noise), spots (scattered
  discs), cells (Voronoi edges), waves (noise-warped sinusoids): curved, stochastic, soft;
- man-made: stripes (square-wave gratings), polygons, polygon outlines, stars (2..k bars from a
  centre), checkerboards: straight edges, corners, regular repeats.

A family has up to five kinds; a kind's classes differ by one parameter (orientation, scale,
number of sides/arms, density).  Random halves therefore mix both families (similar tasks) while
the family split separates them (dissimilar tasks), as in the paper.  Per image, colours,
position, scale, rotation, phase and noise are jittered so that no single pixel statistic gives
the class away.

Layout of the output folder (C classes, N training and M validation images per class):

    train/<wnid>/<wnid>_<iiiii>.JPEG    i = 0..N-1
    val/ILSVRC2012_val_<nnnnnnnn>.JPEG  n = 1..C*M, classes shuffled as in ILSVRC2012
    train.txt     `<wnid>/<wnid>_<iiiii>.JPEG <label>`, class by class, i ascending (paths
                  relative to train/; also the sorted order of the folder, as Caffe's list)
    val.txt       `ILSVRC2012_val_<nnnnnnnn>.JPEG <label>` in n order (relative to val/)
    synsets.txt   the wnids `s0000000`, `s0000001`, ... (label order = sorted order)
    families.txt  `<wnid> natural|man-made  # <kind> <variant>/<variants>` (even labels
                  natural, odd man-made), the `--families` of `data splits`
    synth.json    the parameters (classes, train_per_class, val_per_class, size, seed)

Images are RGB JPEG (quality 90), size x size.  Every image has its own legacy-numpy generator seeded by (seed, class, train/val, index), so the
output does not depend on generation order and the same seed gives byte-identical files (for a
given numpy and Pillow: JPEG bytes come from Pillow's libjpeg).
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from replicate.data.families import MAN_MADE, NATURAL, format_families
from replicate.errors import ReplicateError

KINDS = {
    NATURAL: ("fibres", "blobs", "spots", "cells", "waves"),
    MAN_MADE: ("stripes", "polygon", "outline", "star", "checker"),
}
TRAIN, VAL = 0, 1
JPEG_QUALITY = 90
MAX_CLASSES = 60  # 6 variants a kind: beyond that, neighbouring variants blur into each other
NOISE_STD = 0.07
HUE_JITTER = 0.03  # of a natural kind's hue, on the 0..1 hue circle


@dataclass(frozen=True)
class SynthConfig:
    """What `data synth` generates; written to `<out>/synth.json`."""

    classes: int = 40
    train_per_class: int = 200
    val_per_class: int = 50
    size: int = 36
    seed: int = 0

    def check(self) -> None:
        """Refuse sizes the layout or the patterns cannot hold."""
        limits = {"classes": (2, MAX_CLASSES), "train_per_class": (1, 99999),
                  "val_per_class": (1, 99999), "size": (16, 512), "seed": (0, 2**32 - 1)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ReplicateError(f"synth: {name} must lie in {low}..{high}, got {value}")


@dataclass(frozen=True)
class SynthClass:
    """One generated class: its wnid-like id, family, pattern kind and which variant of it."""

    wnid: str
    family: str
    kind: str
    variant: int
    variants: int

    @property
    def t(self) -> float:
        """The variant as a number in [0, 1]: where this class sits on its kind's parameter."""
        return self.variant / (self.variants - 1) if self.variants > 1 else 0.5


def catalogue(num_classes: int) -> list[SynthClass]:
    """The classes, label order: even labels natural, odd man-made (families interleave as
    ImageNet's do); the j-th class of a family has kind j % 5 and variant j // 5."""
    per_family = {NATURAL: (num_classes + 1) // 2, MAN_MADE: num_classes // 2}
    classes = []
    for label in range(num_classes):
        family = NATURAL if label % 2 == 0 else MAN_MADE
        j, kinds = label // 2, KINDS[family]
        variants = len(range(j % len(kinds), per_family[family], len(kinds)))
        classes.append(SynthClass(f"s{label:07d}", family, kinds[j % len(kinds)],
                                  j // len(kinds), variants))
    return classes


# ---- patterns: each returns a mask in [0, 1] of shape (size, size) -------------------------------

def _soft(distance: np.ndarray) -> np.ndarray:
    """Anti-aliased inside-ness of a signed distance in pixels (negative = inside)."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def _filtered_noise(rng: np.random.RandomState, size: int, sigma_u: float, sigma_v: float,
                    angle: float) -> np.ndarray:
    """White noise low-passed by an oriented Gaussian (std sigma_u along `angle`, sigma_v
    across), normalised to zero mean and unit std; periodic, so any shift is as likely."""
    f = np.fft.fftfreq(size)
    fx, fy = np.meshgrid(f, f)
    u = fx * math.cos(angle) + fy * math.sin(angle)
    v = -fx * math.sin(angle) + fy * math.cos(angle)
    gain = np.exp(-2 * math.pi**2 * ((sigma_u * u) ** 2 + (sigma_v * v) ** 2))
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * gain).real
    return (field - field.mean()) / (field.std() + 1e-12)


def orientation(c: SynthClass, rng: np.random.RandomState) -> float:
    """The angle of an oriented pattern (fibres, stripes), in [0, pi).

    The class fixes the angle folded into [0, pi/2] and each image draws which side: Caffe's
    Data layer mirrors half the training images, which turns an angle a into pi - a, so classes
    told apart by the unfolded angle (45 vs 135 degrees) would be merged by the mirror."""
    spacing = (math.pi / 2) / max(1, c.variants - 1)
    angle = (math.pi / 2) * c.t + rng.normal(0, 0.1 * spacing)
    return angle if rng.random_sample() < 0.5 else math.pi - angle


def _fibres(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    angle = orientation(c, rng)
    field = _filtered_noise(rng, x.shape[0], 5.0 * u, 0.9 * u, angle)
    return 1 / (1 + np.exp(-3 * field))


def _blobs(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    sigma = 1.2 * 5.0**c.t * u * math.exp(rng.uniform(-0.15, 0.15))
    field = _filtered_noise(rng, x.shape[0], sigma, sigma, 0.0)
    return 1 / (1 + np.exp(-4 * (field - rng.uniform(-0.4, 0.4))))


def _spots(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    radius = (1.3 + 4.2 * c.t) * u * math.exp(rng.uniform(-0.15, 0.15))
    count = max(2, min(60, round(0.22 * x.size / (math.pi * radius**2))))
    half = x.shape[0] / 2
    cx = rng.uniform(-half, half, count)[:, None, None]
    cy = rng.uniform(-half, half, count)[:, None, None]
    return _soft(np.hypot(x - cx, y - cy) - radius).max(axis=0)


def _cells(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    count = round(4 * 10.0**c.t * rng.uniform(0.85, 1.15))
    half = x.shape[0] / 2
    d = np.sort(np.hypot(x - rng.uniform(-half, half, count)[:, None, None],
                         y - rng.uniform(-half, half, count)[:, None, None]), axis=0)
    return _soft(d[1] - d[0] - 1.6 * u)


def _waves(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    wavelength = 3.5 * 3.0**c.t * u * math.exp(rng.uniform(-0.1, 0.1))
    angle = rng.uniform(0, math.pi)
    warp = _filtered_noise(rng, x.shape[0], 4.0 * u, 4.0 * u, 0.0)
    phase = 2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / wavelength + 1.5 * warp
    return 0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * math.pi))


def _stripes(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    angle = orientation(c, rng)
    period = rng.uniform(5.0, 8.0) * u
    q = np.mod(x * math.cos(angle) + y * math.sin(angle) + rng.uniform(0, period), period)
    return _soft(np.abs(q - period / 2) - period / 4)


def _polygon_distance(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    """Signed distance (exact inside, close outside) to a randomly placed regular polygon of
    3 + variant sides."""
    sides = 3 + c.variant
    radius = 11.0 * u * math.exp(rng.uniform(-0.2, 0.2))
    x, y = x - rng.uniform(-4, 4) * u, y - rng.uniform(-4, 4) * u
    normals = rng.uniform(0, 2 * math.pi) + 2 * math.pi * np.arange(sides) / sides
    reach = x * np.cos(normals)[:, None, None] + y * np.sin(normals)[:, None, None]
    return reach.max(axis=0) - radius * math.cos(math.pi / sides)


def _polygon(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    return _soft(_polygon_distance(c, rng, x, y, u))


def _outline(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    return _soft(np.abs(_polygon_distance(c, rng, x, y, u)) - 1.2 * u)


def _star(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    arms = 2 + c.variant
    length = 12.0 * u * math.exp(rng.uniform(-0.2, 0.2))
    x, y = x - rng.uniform(-4, 4) * u, y - rng.uniform(-4, 4) * u
    angles = rng.uniform(0, 2 * math.pi) + 2 * math.pi * np.arange(arms) / arms
    ca, sa = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    along = np.clip(x * ca + y * sa, 0, length)
    distance = np.hypot(x - along * ca, y - along * sa).min(axis=0)
    return _soft(distance - 1.6 * u)


def _checker(c: SynthClass, rng: np.random.RandomState, x: np.ndarray, y: np.ndarray, u: float) -> np.ndarray:
    cell = 2.5 * 3.0**c.t * u * math.exp(rng.uniform(-0.1, 0.1))
    angle = rng.uniform(0, math.pi / 2)
    signs = []
    for a in (angle, angle + math.pi / 2):
        q = np.mod(x * math.cos(a) + y * math.sin(a) + rng.uniform(0, 2 * cell), 2 * cell)
        signs.append(np.clip(2 * (np.abs(q - cell) - cell / 2), -1, 1))
    return 0.5 + 0.5 * signs[0] * signs[1]


PATTERNS: dict[str, Callable[..., np.ndarray]] = {
    "fibres": _fibres, "blobs": _blobs, "spots": _spots, "cells": _cells, "waves": _waves,
    "stripes": _stripes, "polygon": _polygon, "outline": _outline, "star": _star,
    "checker": _checker,
}


def _colours(c: SynthClass, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground RGB in [0, 1], at least 0.25 apart in luminance.

    A natural class's foreground has the hue of its kind (as animals and plants have the colours
    of their kind), a man-made class's any colour: colour then matters to the natural tasks and
    not to the man-made ones, which is part of what makes the two families dissimilar tasks."""
    weights = np.array([0.299, 0.587, 0.114])
    kinds = KINDS[NATURAL]
    while True:
        bg = rng.uniform(0.05, 0.95, 3)
        if c.family == NATURAL:
            hue = (kinds.index(c.kind) / len(kinds) + rng.normal(0, HUE_JITTER)) % 1.0
            fg = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.95)))
        else:
            fg = rng.uniform(0.05, 0.95, 3)
        if abs(weights @ (fg - bg)) >= 0.25:
            return bg, fg


def render(c: SynthClass, size: int, rng: np.random.RandomState) -> np.ndarray:
    """One image of class `c`: (size, size, 3) uint8 RGB."""
    coords = np.arange(size) - (size - 1) / 2
    x, y = np.meshgrid(coords, coords)
    mask = PATTERNS[c.kind](c, rng, x, y, size / 36)
    bg, fg = _colours(c, rng)
    image = bg + mask[..., None] * (fg - bg)
    tilt = rng.uniform(-0.15, 0.15, 2) / size  # uneven lighting
    image = image + (x * tilt[0] + y * tilt[1])[..., None]
    image = image + rng.normal(0, NOISE_STD, image.shape)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def image_rng(seed: int, label: int, part: int, index: int) -> np.random.RandomState:
    """The generator of one image (legacy seeding by array: its streams never change)."""
    return np.random.RandomState([seed, label, part, index])


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    """The JPEG file of an RGB uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def train_name(wnid: str, index: int) -> str:
    """Path of a training image relative to train/ (zero-padded: sorted = generated order)."""
    return f"{wnid}/{wnid}_{index:05d}.JPEG"


def val_name(number: int) -> str:
    """File name of validation image `number` (1-based), ILSVRC2012's pattern."""
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def val_order(config: SynthConfig) -> np.ndarray:
    """Which (class, index) each validation image is: item = label * val_per_class + index.
    Shuffled, so classes interleave in file order as in ILSVRC2012's validation set."""
    return np.random.RandomState([config.seed, 2**32 - 1]).permutation(
        config.classes * config.val_per_class)


def _write_tree(root: Path, config: SynthConfig) -> None:
    classes = catalogue(config.classes)
    train_lines = []
    for label, c in enumerate(classes):
        (root / "train" / c.wnid).mkdir(parents=True)
        for index in range(config.train_per_class):
            name = train_name(c.wnid, index)
            pixels = render(c, config.size, image_rng(config.seed, label, TRAIN, index))
            (root / "train" / name).write_bytes(jpeg_bytes(pixels))
            train_lines.append(f"{name} {label}\n")
    (root / "val").mkdir()
    val_lines = []
    for number, item in enumerate(val_order(config).tolist(), 1):
        label, index = divmod(item, config.val_per_class)
        pixels = render(classes[label], config.size, image_rng(config.seed, label, VAL, index))
        (root / "val" / val_name(number)).write_bytes(jpeg_bytes(pixels))
        val_lines.append(f"{val_name(number)} {label}\n")
    (root / "train.txt").write_text("".join(train_lines))
    (root / "val.txt").write_text("".join(val_lines))
    (root / "synsets.txt").write_text("".join(f"{c.wnid}\n" for c in classes))
    header = [f"Families of the {config.classes} generated classes (data synth, seed {config.seed}).",
              "format: <wnid> natural|man-made  # kind variant/variants"]
    notes = {c.wnid: f"{c.kind} {c.variant + 1}/{c.variants}" for c in classes}
    (root / "families.txt").write_text(
        format_families({c.wnid: c.family for c in classes}, notes, header))
    (root / "synth.json").write_text(json.dumps(asdict(config), indent=2) + "\n")


def generate(out: Path, config: SynthConfig) -> bool:
    """Write the dataset to `out`; return False when `out` already holds this very dataset.

    The tree is built beside `out` and renamed into place when complete, so `out` is either
    absent, a finished dataset, or untouched; an existing different folder is refused.
    """
    config.check()
    out = Path(out)
    if out.exists():
        manifest = out / "synth.json"
        if manifest.is_file() and json.loads(manifest.read_text()) == asdict(config):
            return False
        raise ReplicateError(f"{out}: exists and is not this generated dataset; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write_tree(partial, config)
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return True
