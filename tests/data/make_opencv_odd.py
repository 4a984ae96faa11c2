"""Writes datastore_opencv_odd.npz (run once; kept as the record of how the fixture was made).

The odd files of ILSVRC2012 as OpenCV decodes and resizes them: for each case `<case>/bytes` (the
file, made with Pillow), `<case>/color` = cv2.imdecode(IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION),
`<case>/gray` = the same with IMREAD_GRAYSCALE (H x W), `<case>/resized` = cv2.resize(color,
(13, 17), INTER_LINEAR).  Written with opencv-python-headless 5.1.0.95 and Pillow 13.0.0:

  python tests/data/make_opencv_odd.py
"""

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def _file(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, quality=90)
    return out.getvalue()


def main() -> None:
    rng = np.random.default_rng(0)
    smooth = (np.indices((40, 52)).sum(0)[..., None] * np.array([3, 5, 7]) % 256).astype(np.uint8)
    pixels = np.clip(smooth.astype(int) + rng.integers(-40, 40, smooth.shape), 0, 255).astype(np.uint8)
    rgb = Image.fromarray(pixels, "RGB")
    cases = {
        "jpeg": _file(rgb, "JPEG"),
        "cmyk": _file(rgb.convert("CMYK"), "JPEG"),
        "grey": _file(rgb.convert("L"), "JPEG"),
        "png": _file(rgb, "PNG"),
        "png_grey": _file(rgb.convert("L"), "PNG"),
        "png_rgba": _file(rgb.convert("RGBA"), "PNG"),
        "png_palette": _file(rgb.convert("P"), "PNG"),
    }
    arrays = {}
    for case, data in cases.items():
        buffer = np.frombuffer(data, np.uint8)
        color = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        arrays[f"{case}/bytes"] = buffer
        arrays[f"{case}/color"] = color
        arrays[f"{case}/gray"] = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
        arrays[f"{case}/resized"] = cv2.resize(color, (13, 17), interpolation=cv2.INTER_LINEAR)
    np.savez_compressed(Path(__file__).with_name("datastore_opencv_odd.npz"), **arrays)


if __name__ == "__main__":
    main()
