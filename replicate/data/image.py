"""Images as Caffe saw them: decoded and resized by OpenCV, the library Caffe's tools called.

Caffe reads images with `cv::imread`/`cv::imdecode` and resizes them with `cv::resize(...,
INTER_LINEAR)`; we call the same functions (opencv-python-headless), so that every file becomes
the pixels `convert_imageset` stored, the odd files of ILSVRC2012 included:

- CMYK JPEGs (22 in its training set) go through OpenCV's own CMYK -> BGR formula on libjpeg's
  (Adobe, inverted) samples, `k - ((255 - c) * k >> 8)`, the same in OpenCV 2.4 (the 2014
  Caffe's) and 5.x; Pillow's conversion differs from it by a grey level on most pixels;
- a greyscale JPEG read in colour is its luma in B, G and R; read grey, libjpeg's own luma;
- a PNG named .JPEG (one in ILSVRC2012) decodes as the PNG it is (OpenCV reads the bytes, not the
  name); read grey, libpng's RGB -> grey weights (Pillow's differ by 1 on some pixels);
- EXIF orientation is ignored, as OpenCV 2.4 ignored it (newer OpenCV rotates unless told not
  to: we tell it);
- the resize is OpenCV's: on x86 its fixed-point SIMD arithmetic (11-bit coefficients), and an
  exact halving of both sides averages 2x2 blocks (its INTER_AREA fast path).

What can still differ from 2014: the libjpeg inside the OpenCV wheel (libjpeg-turbo) against the
system libjpeg Caffe was linked to, by a grey level in the IDCT or chroma upsampling.  A truncated
file is an error here, where the 2014 OpenCV filled the missing rows with grey and stored them.
OpenCV 5 returns no image for it; OpenCV 4 still fills with grey, so `decode_image` also refuses a
JPEG with no end-of-image marker after its first scan (`jpeg_is_cut`), whichever OpenCV is loaded
(a conda or system `cv2` can shadow the wheel this project asks for).  Warnings libjpeg prints for
files it can still decode ("Corrupt JPEG data: N extraneous bytes before marker") reach stderr, as
they did from convert_imageset.

OpenCV runs single-threaded here: data jobs already run one process per core, and OpenCV's thread
pool does not survive the fork that starts a loader worker.  JPEG encoding (`encode_jpeg`) and
reading a size from the header (`image_size`) use Pillow.

All arrays here are HWC (C = 3 in BGR order, or C = 1 for grey), uint8, as a `cv::Mat` holds them.
"""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from replicate.errors import ReplicateError

cv2.setNumThreads(0)

#: decode_image's `color` -> imdecode flags (IMREAD_COLOR, IMREAD_GRAYSCALE, and for None the
#: native channels, grey staying grey), each without the EXIF rotation OpenCV 2.4 never applied.
_FLAGS = {
    True: cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    False: cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION,
    None: cv2.IMREAD_ANYCOLOR | cv2.IMREAD_IGNORE_ORIENTATION,
}


def _hwc(image: np.ndarray) -> np.ndarray:
    """OpenCV gives one-channel images as H x W; every array here has its channel axis."""
    return image[:, :, None] if image.ndim == 2 else image


#: JPEG start-of-frame markers (baseline, extended, progressive, lossless; not DHT/JPG/DAC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_header(data: bytes | memoryview) -> tuple[int, int]:
    """(colour components of the frame, offset of the first start-of-scan marker) of a JPEG, by
    walking its marker segments; (0, -1) when `data` is not a JPEG or its header is unreadable.

    The walk steps over whole segments, so an EXIF thumbnail's own markers (inside APP1) are never
    taken for the image's."""
    if data[:2] != b"\xff\xd8":
        return 0, -1
    components, i = 0, 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return 0, -1
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in _SOF:
            components = data[i + 9] if i + 9 < len(data) else 0
        if marker == 0xDA:
            return components, i
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return 0, -1


def jpeg_components(data: bytes | memoryview) -> int:
    """The number of colour components of a JPEG's frame (1 grey, 3 YCbCr, 4 CMYK/YCCK); 0 when
    `data` is not a JPEG (a PNG saved as .JPEG, say) or its header is unreadable."""
    return _jpeg_header(data)[0]


def jpeg_is_cut(data: bytes | memoryview) -> bool:
    """True for a JPEG with no end-of-image marker (FF D9) after its first scan: a file cut short.

    Inside a scan's entropy-coded data every FF byte is followed by 00 or a restart marker, so an
    FF D9 after the first scan is the end of the image (or, in a progressive file, inside a table
    between scans: then a cut file passes, as it would with OpenCV 4 alone).  libjpeg runs out of
    data before that marker in such a file; OpenCV 5 then returns no image, OpenCV 4 grey rows.

    A file that ends with the marker, as nearly every file does, is answered from its last two
    bytes (0.2 µs).  The search through a scan's data took 33 µs for a 33 KB 256x256 JPEG on a
    2-core Intel Xeon: a serial cost in the GPU path's loader thread, where 35,000 images a second
    leave ~29 µs for everything."""
    if bytes(data[-2:]) == b"\xff\xd9":
        return False
    scan = _jpeg_header(data)[1]
    return scan >= 0 and bytes(data[scan:]).rfind(b"\xff\xd9") < 0


def decode_image(data: bytes, color: bool | None = True, name: str = "image") -> np.ndarray:
    """Decode encoded bytes (JPEG, PNG, ...) to HWC uint8 with `cv::imdecode`.

    `color=True` is OpenCV's IMREAD_COLOR (3 channels BGR), False IMREAD_GRAYSCALE (1 channel),
    None its native mode (grey stays grey).  Undecodable data -> ReplicateError naming `name`.
    """
    buffer = np.frombuffer(data, np.uint8)
    try:
        image = cv2.imdecode(buffer, _FLAGS[color]) if len(buffer) else None
    except cv2.error as err:
        raise ReplicateError(f"{name}: cannot decode image ({str(err).strip().splitlines()[-1]})") from None
    if image is None:
        raise ReplicateError(f"{name}: cannot decode image (not a known image format, or truncated)")
    if jpeg_is_cut(data):
        raise ReplicateError(f"{name}: cannot decode image (truncated: no end-of-image marker after its scan; "
                             f"OpenCV {cv2.__version__} filled the rest with grey)")
    return _hwc(image)


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


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`cv::resize(image, Size(width, height))` with INTER_LINEAR, for HWC uint8 images."""
    return _hwc(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
