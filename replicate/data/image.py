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
JPEG whose data ends before its end-of-image marker (`jpeg_is_cut`), whichever OpenCV is loaded
(a conda or system `cv2` can shadow the wheel this project asks for).  Warnings libjpeg prints for
files it can still decode ("Corrupt JPEG data: N extraneous bytes before marker") reach stderr, as
they did from convert_imageset.

OpenCV runs single-threaded here: data jobs already run one process per core, and OpenCV's thread
pool does not survive the fork that starts a loader worker.  Encoding is OpenCV's `imencode`, as
convert_imageset's (its JPEGs are byte for byte Pillow's at the same quality: one libjpeg-turbo);
reading a size from the header (`image_size`) uses Pillow.

All arrays here are HWC (C = 3 in BGR order, or C = 1 for grey), uint8, as a `cv::Mat` holds them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from replicate.errors import ReplicateError

cv2.setNumThreads(0)

#: decode_image's `color` -> imdecode flags (IMREAD_COLOR, IMREAD_GRAYSCALE, and for None the
#: native channels: Caffe's flag -1, IMREAD_UNCHANGED), each without the EXIF rotation OpenCV 2.4
#: never applied (IMREAD_UNCHANGED never rotates).
_FLAGS = {
    True: cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    False: cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION,
    None: cv2.IMREAD_UNCHANGED,
}


def _hwc(image: np.ndarray) -> np.ndarray:
    """OpenCV gives one-channel images as H x W; every array here has its channel axis."""
    return image[:, :, None] if image.ndim == 2 else image


#: JPEG start-of-frame markers (baseline, extended, progressive, lossless; not DHT/JPG/DAC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _markers(data: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """(marker, offset) of each marker segment of a JPEG, in file order, up to its end-of-image
    marker (EOI), as libjpeg's reader finds them; nothing when `data` is not a JPEG.

    A segment with a length is stepped over whole, so an EXIF thumbnail's markers (inside APP1)
    and bytes in a table that look like a marker are never taken for the image's.  A scan's
    entropy-coded data runs to the first FF that is not a stuffed byte (FF 00), a restart marker
    (FF D0-D7) or a fill byte.  Bytes where a marker should be are skipped to the next FF, as
    libjpeg skips them ("extraneous bytes before marker").  The walk stops where the data ends: in
    a segment, or in a scan."""
    if data[:2] != b"\xff\xd8":
        return
    whole: bytes | None = data if isinstance(data, bytes) else None  # for find(), once a scan is reached
    i, n = 2, len(data)
    while i + 1 < n:
        marker = data[i + 1]
        if data[i] != 0xFF or marker == 0xFF:  # extraneous bytes, or a fill byte before a marker
            i += 1
            continue
        if marker == 0xD9:
            yield marker, i
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        end = i + 2 + ((data[i + 2] << 8) | data[i + 3]) if i + 3 < n else n + 1
        if end > n:
            return
        yield marker, i
        i = end
        if marker == 0xDA:
            whole = bytes(data) if whole is None else whole
            i = _scan_end(whole, i)


def _scan_end(data: bytes, i: int) -> int:
    """The offset of the marker that ends the entropy-coded data starting at `i` (len(data) when
    the data ends first)."""
    while (i := data.find(b"\xff", i)) >= 0 and i + 1 < len(data):
        following = data[i + 1]
        if following == 0xFF:
            i += 1
        elif following == 0 or 0xD0 <= following <= 0xD7:
            i += 2
        else:
            return i
    return len(data)


def _jpeg_header(data: bytes | memoryview) -> tuple[int, int]:
    """(colour components of the frame, offset of the first start-of-scan marker) of a JPEG; (0,
    -1) when `data` is not a JPEG or its header is cut short."""
    components = 0
    for marker, i in _markers(data):
        if marker in _SOF:
            components = data[i + 9] if i + 9 < len(data) else 0
        if marker == 0xDA:
            return components, i
    return 0, -1


def jpeg_components(data: bytes | memoryview) -> int:
    """The number of colour components of a JPEG's frame (1 grey, 3 YCbCr, 4 CMYK/YCCK); 0 when
    `data` is not a JPEG (a PNG saved as .JPEG, say) or its header is unreadable."""
    return _jpeg_header(data)[0]


def jpeg_is_cut(data: bytes | memoryview) -> bool:
    """True for a JPEG whose data ends before its end-of-image marker (FF D9): a file cut short, in
    its header, in a scan or between the scans of a progressive file.  libjpeg then runs out of
    data; OpenCV 5 returns no image, OpenCV 4 grey rows.  False for what is not a JPEG (its decoder
    judges it).

    A file that ends with the marker, as nearly every file does, is answered from its last two
    bytes (0.2 µs).  The walk through the whole file (`_markers`) runs for the others only: a
    serial cost in the GPU path's loader thread would count, where 35,000 images a second leave
    ~29 µs for everything."""
    if bytes(data[-2:]) == b"\xff\xd9" or data[:2] != b"\xff\xd8":
        return False
    return not any(marker == 0xD9 for marker, _ in _markers(data))


def decode_image(data: bytes, color: bool | None = True, name: str = "image") -> np.ndarray:
    """Decode encoded bytes (JPEG, PNG, ...) to HWC uint8 with `cv::imdecode`.

    `color=True` is OpenCV's IMREAD_COLOR (3 channels BGR), False IMREAD_GRAYSCALE (1 channel),
    None its native mode: `cv::imdecode(data, -1)` (IMREAD_UNCHANGED), what Caffe's
    DecodeDatumToCVMatNative calls for an encoded Datum without force_color/force_gray (the Data
    layer, compute_image_mean).  Grey stays grey, and an alpha channel is kept: an RGBA PNG gives
    4 channels (BGRA), a grey+alpha PNG 4 as well (B = G = R), as the Data layer of real Caffe
    gives them (golden case data_encoded_png, `native_alpha`); IMREAD_ANYCOLOR, used here before,
    dropped the alpha and gave 3.  An image of more than 8 bits (a 16-bit PNG) is refused, as
    Caffe's DataTransformer CHECKs its images are unsigned bytes.  Undecodable data ->
    ReplicateError naming `name`.
    """
    buffer = np.frombuffer(data, np.uint8)
    try:
        image = cv2.imdecode(buffer, _FLAGS[color]) if len(buffer) else None
    except cv2.error as err:
        raise ReplicateError(f"{name}: cannot decode image ({str(err).strip().splitlines()[-1]})") from None
    if image is None:
        raise ReplicateError(f"{name}: cannot decode image (not a known image format, or truncated)")
    if image.dtype != np.uint8:
        raise ReplicateError(f"{name}: {image.dtype.itemsize * 8}-bit image; Caffe's data layers take 8-bit images only "
                             "(read natively, as without force_color/force_gray, the depth is kept)")
    if jpeg_is_cut(data):
        raise ReplicateError(f"{name}: cannot decode image (truncated: no end-of-image marker before its data ends; "
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


def encode_image(image: np.ndarray, extension: str, params: tuple[int, ...] = ()) -> bytes:
    """`cv::imencode("." + extension, image)`: what convert_imageset stores for an encoded record
    it re-encodes (OpenCV's defaults: JPEG quality 95, PNG compression 1).  An extension OpenCV
    cannot write is an error."""
    try:
        ok, buffer = cv2.imencode(f".{extension}", image, list(params))
    except cv2.error as err:
        raise ReplicateError(f"OpenCV {cv2.__version__} cannot encode an image as .{extension} "
                             f"({getattr(err, 'err', '') or 'no encoder'})") from None
    if not ok:
        raise ReplicateError(f"OpenCV {cv2.__version__} could not encode an image as .{extension}")
    return buffer.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """Encode an HWC BGR/grey uint8 image as JPEG with `cv::imencode(".jpg")` at `quality`."""
    return encode_image(image, "jpg", (cv2.IMWRITE_JPEG_QUALITY, quality))


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`cv::resize(image, Size(width, height))` with INTER_LINEAR, for HWC uint8 images."""
    return _hwc(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
