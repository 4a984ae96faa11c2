"""Images as Caffe sees them: decoded to BGR uint8, resized the way OpenCV's INTER_LINEAR does.

Caffe reads images with OpenCV (`cv::imread`, `cv::imdecode`) and resizes them with
`cv::resize(..., INTER_LINEAR)`.  We decode with Pillow and reimplement the resize in numpy, because
Pillow's own bilinear filter widens its support when it shrinks an image (an anti-aliasing filter)
and so differs from OpenCV by many grey levels on every downscaled ImageNet photo.  How close
we are to OpenCV:

- The resize reproduces OpenCV's x86 (SIMD) fixed-point arithmetic, checked bit for bit against
  opencv-python 5.0; its scalar fallback (other CPUs) rounds some pixels 1 grey level differently.
- JPEG decoding uses Pillow's libjpeg-turbo; OpenCV builds linked to another libjpeg version may
  differ by a grey level (IDCT, chroma upsampling).  EXIF orientation is ignored, as OpenCV 2.4
  (the 2014 Caffe's) did.
- Colour JPEG decoding and grey JPEG decoding (libjpeg's luma output) match opencv-python 5.0 bit
  for bit.  Other formats decoded to grey use Pillow's luma weights, which can differ by 1.

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
            if color is False and image.format == "JPEG":
                image.draft("L", image.size)  # libjpeg's own grey output, as OpenCV asks for
            image.load()
            return _to_array(image, color)
    except UnidentifiedImageError:
        raise ReplicateError(f"{name}: cannot decode image (not a known image format)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ReplicateError(f"{name}: cannot decode image ({err})") from None


def image_size(data: bytes, name: str = "image") -> tuple[int, int]:
    """(height, width) of encoded bytes, read from the header only."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return height, width
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ReplicateError(f"{name}: cannot read image size ({err})") from None


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


def _linear_taps(src: int, dst: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: first and second source index and their two fixed-point weights.

    OpenCV maps output pixel centres onto input pixel centres (`(d + 0.5) * scale - 0.5`, computed
    in double and narrowed to float) and rounds the weights to 11-bit integers.  Past a border it
    clamps the source indices; along x it also moves the whole weight onto the inside tap, along y
    it keeps the unclamped weights (both taps then read the same row, which still changes how the
    vertical pass rounds).
    """
    scale = 1.0 / (dst / src)  # OpenCV: 1 / inv_scale, not src / dst (they differ in the last bit)
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    frac = (f - i0.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        low = i0 < 0
        frac[low], i0[low] = 0, 0
        high = i0 >= src - 1
        frac[high], i0[high] = 0, src - 1
    i1 = np.clip(i0 + 1, 0, src - 1)
    i0 = np.clip(i0, 0, src - 1)
    w1 = np.rint(frac.astype(np.float64) * _COEF_SCALE).astype(np.int64)
    w0 = np.rint((np.float32(1) - frac).astype(np.float64) * _COEF_SCALE).astype(np.int64)
    return i0, i1, np.stack([w0, w1]).astype(np.int32)


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`cv::resize(image, Size(width, height))` with INTER_LINEAR, for HWC uint8 images.

    A horizontal pass makes rows scaled by 2^11; the vertical pass combines two rows the way
    OpenCV's SSE2/universal-intrinsics kernel does (`((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16)`,
    then `(x + 2) >> 2`), which is what OpenCV on x86 computes.  Like OpenCV, an exact halving of
    both sides averages 2x2 blocks instead (its INTER_AREA fast path).
    """
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.copy()
    if src_h == 2 * height and src_w == 2 * width:
        blocks = image.reshape(height, 2, width, 2, -1).astype(np.int32)
        return ((blocks.sum(axis=(1, 3)) + 2) >> 2).astype(np.uint8)
    x0, x1, wx = _linear_taps(src_w, width, clamp_weights=True)
    y0, y1, wy = _linear_taps(src_h, height, clamp_weights=False)
    img = image.astype(np.int32)
    rows = (img[:, x0] * wx[0][None, :, None] + img[:, x1] * wx[1][None, :, None]) >> 4
    out = ((rows[y0] * wy[0][:, None, None]) >> 16) + ((rows[y1] * wy[1][:, None, None]) >> 16)
    return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)
