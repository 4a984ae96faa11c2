"""Image decoding and resizing against OpenCV's own output.

tests/data/datastore_opencv.npz was written once with opencv-python 5.0.0 (not a dependency):
`resize{i}/in` -> `cv2.resize(in, (W, H), interpolation=cv2.INTER_LINEAR)` = `resize{i}/out`
(cases include up- and downscaling, grey, a 1-pixel-high source and an exact halving), and a JPEG
(`jpeg/bytes`) decoded by `cv2.imdecode` in colour (`jpeg/color`, BGR) and grey (`jpeg/gray`).
tests/data/datastore_opencv_odd.npz holds ILSVRC2012's odd files (CMYK and grey JPEGs, PNGs of
every colour type) as opencv-python-headless 5.1 decodes and resizes them (see make_opencv_odd.py).
"""

import io
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from replicate.data.image import decode_image, encode_jpeg, jpeg_components, jpeg_is_cut, read_image, resize_linear
from replicate.errors import ReplicateError

OPENCV = np.load(Path(__file__).parent / "data" / "datastore_opencv.npz")
ODD = np.load(Path(__file__).parent / "data" / "datastore_opencv_odd.npz")


@pytest.mark.parametrize("case", sorted({k.split("/")[0] for k in OPENCV if k.startswith("resize")}))
def test_resize_is_opencv_inter_linear_bit_for_bit(case):
    src, ref = OPENCV[f"{case}/in"], OPENCV[f"{case}/out"]
    np.testing.assert_array_equal(resize_linear(src, *ref.shape[:2]), ref)


def test_resize_does_not_antialias_like_pillow():
    # A 1-pixel checkerboard shrunk by 3 keeps its contrast under OpenCV's bilinear (no
    # anti-aliasing), where Pillow's filter would average it to grey.
    board = (np.indices((30, 30)).sum(0) % 2 * 255).astype(np.uint8)[:, :, None]
    out = resize_linear(board, 10, 10)
    assert out.min() == 0 and out.max() == 255


def test_jpeg_decoding_matches_opencv():
    data = OPENCV["jpeg/bytes"].tobytes()
    np.testing.assert_array_equal(decode_image(data, True), OPENCV["jpeg/color"])
    np.testing.assert_array_equal(decode_image(data, False)[:, :, 0], OPENCV["jpeg/gray"])
    assert decode_image(data, None).shape[2] == 3


@pytest.mark.parametrize("case", sorted({k.split("/")[0] for k in ODD}))
def test_odd_files_decode_and_resize_to_opencvs_pixels(case):
    data = ODD[f"{case}/bytes"].tobytes()
    np.testing.assert_array_equal(decode_image(data, True), ODD[f"{case}/color"])
    np.testing.assert_array_equal(decode_image(data, False)[:, :, 0], ODD[f"{case}/gray"])
    np.testing.assert_array_equal(resize_linear(decode_image(data, True), 17, 13), ODD[f"{case}/resized"])


def test_the_cmyk_fixture_is_opencv_2_4s_formula_on_libjpegs_samples():
    # OpenCV 2.4 (Caffe's in 2014) turned libjpeg's CMYK samples, inverted as Adobe writes them,
    # into BGR by `k - ((255 - c) * k >> 8)` per channel; Pillow gives those samples un-inverted.
    with Image.open(io.BytesIO(ODD["cmyk/bytes"].tobytes())) as image:
        assert image.mode == "CMYK"
        samples = 255 - np.asarray(image).astype(np.int64)
    c, m, y, k = np.moveaxis(samples, 2, 0)
    bgr = np.stack([k - ((255 - v) * k >> 8) for v in (y, m, c)], axis=2)
    np.testing.assert_array_equal(bgr, ODD["cmyk/color"])


def test_channels_are_bgr_and_grey_stays_grey_natively(tmp_path):
    red = np.zeros((4, 5, 3), np.uint8)
    red[..., 0] = 255  # RGB red
    Image.fromarray(red).save(tmp_path / "red.png")
    bgr = read_image(tmp_path / "red.png")
    assert bgr.shape == (4, 5, 3) and (bgr[..., 2] == 255).all() and (bgr[..., :2] == 0).all()
    Image.fromarray(np.full((4, 5), 77, np.uint8)).save(tmp_path / "grey.png")
    assert decode_image((tmp_path / "grey.png").read_bytes(), None).shape == (4, 5, 1)
    assert read_image(tmp_path / "grey.png", color=True).shape == (4, 5, 3)



def test_native_decoding_keeps_alpha_as_caffes_flag_minus_1(tmp_path):
    # Caffe's DecodeDatumToCVMatNative is cv::imdecode(data, -1) (IMREAD_UNCHANGED): an encoded
    # RGBA or grey+alpha PNG read by the Data layer without force_color/force_gray has 4 channels
    # (golden case data_encoded_png, native_alpha); forced, the alpha is dropped.
    rgba = np.arange(4 * 5 * 4, dtype=np.uint8).reshape(4, 5, 4)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    data = (tmp_path / "rgba.png").read_bytes()
    native = decode_image(data, None)
    np.testing.assert_array_equal(native, rgba[:, :, [2, 1, 0, 3]])  # BGRA
    np.testing.assert_array_equal(decode_image(data, True), rgba[:, :, [2, 1, 0]])
    grey_alpha = np.stack([np.full((4, 5), 70, np.uint8), np.full((4, 5), 200, np.uint8)], axis=2)
    Image.fromarray(grey_alpha, "LA").save(tmp_path / "la.png")
    native = decode_image((tmp_path / "la.png").read_bytes(), None)
    assert native.shape == (4, 5, 4)
    assert (native[..., :3] == 70).all() and (native[..., 3] == 200).all()


def test_native_decoding_refuses_16_bit_images():
    # IMREAD_UNCHANGED keeps a 16-bit PNG's depth, which Caffe's DataTransformer CHECKs against.
    ok, png16 = cv2.imencode(".png", np.full((3, 4), 40000, np.uint16))
    assert ok
    with pytest.raises(ReplicateError, match="16-bit image"):
        decode_image(png16.tobytes(), None, name="deep.png")
    assert decode_image(png16.tobytes(), True).dtype == np.uint8  # forced colour or grey: 8 bits

def test_encode_jpeg_roundtrip_keeps_bgr():
    yy, xx = np.mgrid[0:16, 0:16]
    img = np.stack([xx * 15, yy * 15, np.full_like(xx, 200)], axis=2).astype(np.uint8)
    back = decode_image(encode_jpeg(img), True)
    assert np.abs(back.astype(int) - img).mean() < 3


def test_a_jpeg_cut_mid_scan_is_an_error_not_grey_rows():
    # OpenCV 4 decoded it and filled the missing rows with grey (as the 2014 OpenCV did); 5 refuses
    # it, so a damaged file is reported instead of stored: hence opencv-python-headless>=5.
    data = ODD["jpeg/bytes"].tobytes()
    with pytest.raises(ReplicateError, match="cut.jpg: cannot decode image"):
        decode_image(data[: len(data) // 2], True, name="cut.jpg")


def _with_segment(jpeg: bytes, payload: bytes) -> bytes:
    """`jpeg` with an APP13 segment holding `payload` right after its SOI marker."""
    return jpeg[:2] + b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_jpeg_is_cut_walks_to_the_end_marker():
    data = ODD["jpeg/bytes"].tobytes()
    scan = data.index(b"\xff\xda")
    assert not jpeg_is_cut(data)
    assert all(jpeg_is_cut(data[:end]) for end in range(scan + 4, len(data) - 1, 97))
    assert jpeg_is_cut(data[:-2]) and jpeg_is_cut(data[:-1])  # the marker itself cut
    assert not jpeg_is_cut(data + b"\x00trailing\xff\xda bytes")  # OpenCV ignores what follows it
    assert jpeg_is_cut(data[:scan]) and jpeg_is_cut(data[:scan + 5])  # cut in the header
    assert not any(jpeg_is_cut(ODD[f"{case}/bytes"].tobytes()) for case in ("cmyk", "grey", "png", "png_grey"))
    # A thumbnail's own scan and end marker sit inside a segment, which the walk steps over.
    thumbed = _with_segment(data, b"thumb\x00" + ODD["grey/bytes"].tobytes())
    assert not jpeg_is_cut(thumbed)
    assert jpeg_is_cut(thumbed[: len(thumbed) // 2 + len(data) // 4])
    assert jpeg_components(thumbed) == 3 and jpeg_components(thumbed[: len(thumbed) - 100]) == 3


def test_a_progressive_jpeg_cut_between_scans_is_cut_though_a_segment_holds_the_end_marker(monkeypatch):
    # A table or comment between two scans may hold the bytes FF D9; stepping over segments by their
    # lengths (not searching for the marker) sees the file end in the middle of its scans.
    out = io.BytesIO()
    Image.fromarray(decode_image(ODD["jpeg/bytes"].tobytes(), True)[:, :, ::-1]).save(
        out, "JPEG", quality=90, progressive=True)
    data = out.getvalue()
    scans = [m.start() for m in re.finditer(b"\xff\xda", data)]
    assert len(scans) > 2
    comment = b"\xff\xfe\x00\x06\xff\xd9\x00\x00"
    marked = data[: scans[2]] + comment + data[scans[2]:]
    assert not jpeg_is_cut(marked)
    cut = marked[: scans[2] + len(comment) + 20]
    assert jpeg_is_cut(cut)
    import replicate.data.image as image

    whole = decode_image(marked, True)
    monkeypatch.setattr(image.cv2, "imdecode", lambda buffer, flags: whole.copy())  # OpenCV 4's grey rows
    with pytest.raises(ReplicateError, match="cut.jpg: cannot decode image .truncated"):
        decode_image(cut, True, name="cut.jpg")


def test_a_cut_jpeg_is_refused_whichever_opencv_decodes_it(monkeypatch):
    # OpenCV 4.10 (checked by hand: opencv-python-headless 4.10.0.84) returns a cut JPEG's image
    # with grey rows; a cv2 of that kind shadowing the wheel must not reach the store.
    import replicate.data.image as image

    data = ODD["jpeg/bytes"].tobytes()
    whole = decode_image(data, True)
    monkeypatch.setattr(image.cv2, "imdecode", lambda buffer, flags: whole.copy())
    with pytest.raises(ReplicateError, match="cut.jpg: cannot decode image .truncated: no end-of-image marker"):
        decode_image(data[: len(data) - 40], True, name="cut.jpg")
    np.testing.assert_array_equal(decode_image(data, True), whole)


def test_bad_files_name_the_path(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ReplicateError, match="bad.jpg: cannot decode image"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(ReplicateError, match="missing.jpg: cannot read image"):
        read_image(tmp_path / "missing.jpg")
