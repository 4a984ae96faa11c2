"""Images as Caffe sees them: decoded to BGR uint8, resized the way OpenCV's INTER_LINEAR does.

Caffe reads images with OpenCV (`cv::imread`, `cv::imdecode`) and resizes them with
`cv::resize(..., INTER_LINEAR)`.  We decode with Pillow and reimplement the resize in numpy, because
Pillow's own bilinear filter widens its support when it shrinks an image (an anti-aliasing filter)
and so differs from OpenCV by many grey levels on every downscaled ImageNet photo.  Known,
documented differences from OpenCV:

- The resize follows OpenCV's reference (scalar) fixed-point arithmetic; OpenCV's SIMD path rounds
  its vertical pass differently and can differ by 1 grey level on a few pixels.
- JPEG decoding uses Pillow's libjpeg(-turbo); OpenCV builds link various libjpeg versions, whose
  IDCT/upsampling may differ by a grey level.  EXIF orientation is ignored, as OpenCV 2.4 (the
  2014 Caffe's) did.
- Greyscale decoding uses Pillow's ITU-R 601 luma conversion of the decoded RGB image.

All arrays here are HWC (C = 3 in BGR order, or C = 1 for grey), uint8, as a `cv::Mat` holds them.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from replicate.errors import ReplicateError

#: OpenCV's fixed-point precision for INTER_LINEAR coefficients of 8-bit images.
_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def _to_array(image: Image.Image, color: bool | None) -> np.ndarray:
    """Pillow image -> HWC uint8 BGR/grey.  color None keeps grey images grey (imdecode's -1)."""
    if color is None:
        color = image.mode not in ("L", "1", "I;16", "I", "F")
    if color:
        rgb = np.asarray(image.convert("RGB"))
        return np.ascontiguousarray(rgb[:, :, ::-1])
    return np.asarray(image.convert("L"))[:, :, None].copy()


def decode_image(data: bytes, color: bool | None = True, name: str = "image") -> np.ndarray:
    """Decode encoded bytes (JPEG, PNG, ...) to HWC uint8.

    `color=True` is OpenCV's IMREAD_COLOR (3 channels BGR), False IMREAD_GRAYSCALE (1 channel),
    None its native mode (grey stays grey).  Undecodable data -> ReplicateError naming `name`.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _to_array(image, color)
    except UnidentifiedImageError:
        raise ReplicateError(f"{name}: cannot decode image (not a known image format)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ReplicateError(f"{name}: cannot decode image ({err})") from None


def read_image(path: str | os.PathLike[str], color: bool = True) -> np.ndarray:
    """Read an image file as `cv::imread` would (see `decode_image`); errors name the path."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ReplicateError(f"{path}: cannot read image ({err.strerror})") from None
    return decode_image(data, color, name=str(path))


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """Encode an HWC BGR/grey uint8 image as JPEG, like `cv::imencode(".jpg")` (quality 95)."""
    if image.shape[2] == 3:
        pil = Image.fromarray(np.ascontiguousarray(image[:, :, ::-1]), "RGB")
    else:
        pil = Image.fromarray(image[:, :, 0], "L")
    out = io.BytesIO()
    pil.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: left source index, right source index, and the two fixed-point weights.

    OpenCV maps output pixel centres onto input pixel centres (`(d + 0.5) * scale - 0.5`, computed
    in double and narrowed to float), clamps at both borders with a zero weight on the outside tap,
    and rounds the weights to 11-bit integers.
    """
    scale = src / dst
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    frac = (f - i0.astype(np.float32)).astype(np.float32)
    low = i0 < 0
    frac[low], i0[low] = 0, 0
    high = i0 >= src - 1
    frac[high], i0[high] = 0, src - 1
    i1 = np.minimum(i0 + 1, src - 1)
    w1 = np.rint(frac.astype(np.float64) * _COEF_SCALE).astype(np.int64)
    w0 = np.rint((np.float32(1) - frac).astype(np.float64) * _COEF_SCALE).astype(np.int64)
    return i0, i1, np.stack([w0, w1])


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`cv::resize(image, Size(width, height))` with INTER_LINEAR, for HWC uint8 images.

    Like OpenCV, an exact halving of both sides averages 2x2 blocks (its INTER_AREA fast path).
    """
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.copy()
    if src_h == 2 * height and src_w == 2 * width:
        blocks = image.reshape(height, 2, width, 2, -1).astype(np.int32)
        return ((blocks.sum(axis=(1, 3)) + 2) >> 2).astype(np.uint8)
    x0, x1, wx = _linear_taps(src_w, width)
    y0, y1, wy = _linear_taps(src_h, height)
    img = image.astype(np.int64)
    rows = img[:, x0] * wx[0][None, :, None] + img[:, x1] * wx[1][None, :, None]
    out = rows[y0] * wy[0][:, None, None] + rows[y1] * wy[1][:, None, None]
    out = (out + (1 << (2 * _COEF_BITS - 1))) >> (2 * _COEF_BITS)
    return np.clip(out, 0, 255).astype(np.uint8)
