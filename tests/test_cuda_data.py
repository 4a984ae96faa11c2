"""GPU tier: the data path on the device.

- JPEGs decoded on the device (nvjpeg, batched; torchvision's CPU decoder in a CPU dry run)
  against the CPU reference decoder, on ImageNet's odd files: CMYK and PNG-named records go to the CPU decoder (so they are equal), RGB and
  greyscale JPEGs are nvjpeg's own decode, whose IDCT and chroma upsampling are not libjpeg's:
  they must stay within `NVJPEG_MAX_LEVELS` of the reference at every pixel and
  `NVJPEG_MEAN_LEVELS` on average.
- A JPEG cut short is refused with its name on the device path too.
- Raw records through the workers' shared-memory slots (page-locked on CUDA), the loader thread
  and the copy stream, or read here, give the CPU path's batches bit for bit (crop, mirror, mean and scale run on the
  device as one gather with the CPU loop's float32 arithmetic).
- The device gather equals Caffe's per-pixel loop (`DataTransformer.apply` on the CPU) with
  random crops and mirrors in the TRAIN phase; the golden Data-layer case of real Caffe runs on the
  device in tests/test_cuda_golden.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from replicate.data.image import decode_image, jpeg_components
from replicate.data.lmdb_io import array_datum, write_lmdb
from replicate.data.loader import BatchMaker, GpuLoader, SerialLoader, decode_jpegs
from replicate.data.sources import LmdbSource
from replicate.data.transform import TRAIN, DataTransformer, batch_rng
from replicate.errors import ReplicateError
from replicate.io.binary import write_mean
from replicate.proto import caffe_pb2

pytestmark = pytest.mark.gpu

#: nvjpeg against libjpeg-turbo on the same file: the largest difference of one pixel's level,
#: and the mean absolute difference (levels of 0..255).
NVJPEG_MAX_LEVELS = 16
NVJPEG_MEAN_LEVELS = 1.5


def _encoded(mode: str, fmt: str = "JPEG", seed: int = 0, size: tuple[int, int] = (37, 45)) -> bytes:
    # Smooth gradients plus noise: photographs' mix of low and high frequencies.
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: size[0], : size[1]]
    base = np.stack([(x * 5) % 256, (y * 7) % 256, ((x + y) * 3) % 256], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(out, format=fmt, quality=90)
    return out.getvalue()


ODD = {"rgb.jpg": _encoded("RGB"), "cmyk.jpg": _encoded("CMYK"), "gray.jpg": _encoded("L"),
       "png.JPEG": _encoded("RGB", "PNG"), "rgb2.jpg": _encoded("RGB", seed=1)}


@pytest.mark.parametrize("force_color", [True, False], ids=["force_color", "as_stored"])
def test_device_jpeg_decoding_of_odd_files_is_within_tolerance_of_the_reference(
    device: torch.device, force_color: bool
) -> None:
    names, blobs = list(ODD), list(ODD.values())
    decoded = decode_jpegs(device, blobs, force_color=force_color, force_gray=False, where=names)
    for name, data, image in zip(names, blobs, decoded):
        assert image.device.type == device.type, f"{name} decoded on {image.device}"
        reference = decode_image(data, True if force_color else None, name).transpose(2, 0, 1)
        ours = image.cpu().numpy()
        assert ours.shape == reference.shape, f"{name}: {ours.shape} != {reference.shape}"
        difference = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
        if jpeg_components(data) in (1, 3):  # nvjpeg's decode
            assert difference.max() <= NVJPEG_MAX_LEVELS and difference.mean() <= NVJPEG_MEAN_LEVELS, (
                f"{name}: nvjpeg differs from the reference by up to {difference.max()} levels, "
                f"{difference.mean():.2f} on average")
        else:  # CMYK, PNG: the reference decoder itself
            assert difference.max() == 0, f"{name} was not decoded by the reference decoder"


def test_a_cut_jpeg_is_refused_with_its_name_not_decoded_on_the_device(device: torch.device) -> None:
    # nvjpeg's leniency with a file cut short is unknown; the CPU reference decoder refuses it.
    whole = ODD["rgb.jpg"]
    with pytest.raises(ReplicateError, match="cut.jpg: cannot decode image"):
        decode_jpegs(device, [whole, whole[: len(whole) // 2]], False, False, ["rgb.jpg", "cut.jpg"])


@pytest.fixture
def raw_maker(tmp_path: Path) -> BatchMaker:
    images = np.random.default_rng(0).integers(0, 256, (11, 3, 20, 23), dtype=np.uint8)
    write_lmdb(tmp_path / "db", [(f"{i:03d}", array_datum(img, i % 4)) for i, img in enumerate(images)])
    write_mean(tmp_path / "mean.binaryproto", images.mean(axis=0, keepdims=True))
    param = caffe_pb2.TransformationParameter(
        crop_size=15, mirror=True, scale=0.25, mean_file=str(tmp_path / "mean.binaryproto"))
    return BatchMaker(LmdbSource(tmp_path / "db"), DataTransformer(param, TRAIN), batch_size=4, seed=5)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_device_path_gives_the_cpu_paths_batches(device: torch.device, raw_maker: BatchMaker, workers: int) -> None:
    loader = GpuLoader(raw_maker, str(device), workers=workers, prefetch=3)
    try:
        ours = [next(loader) for _ in range(6)]  # wraps around the 11 records
        if workers:
            # Every batch came through the workers' shared-memory slots, not pickled, and on CUDA
            # those slots are page-locked, so the copy stream copies them without staging.
            assert loader.delivered["pickled"] == 0 and loader.delivered["in_place"] >= 6, loader.delivered
            if device.type == "cuda":
                assert loader.pinned is True, "the workers' slots are not page-locked"
    finally:
        loader.close()
    serial = SerialLoader(raw_maker)
    for k, (data, label) in enumerate(ours):
        assert data.device.type == device.type, f"batch {k} on {data.device}"
        # Labels stay on the host (page-locked beside CUDA images), where the net checks their range
        # before moving them to the device without waiting.
        assert label.device.type == "cpu", f"batch {k}: labels on {label.device}"
        assert device.type != "cuda" or label.is_pinned(), f"batch {k}: labels not page-locked"
        cpu_data, cpu_label = next(serial)
        assert torch.equal(data.cpu(), cpu_data), f"batch {k}: the device path's pixels differ"
        assert torch.equal(label.cpu(), cpu_label), f"batch {k}: labels differ"


def test_the_device_gather_is_caffes_per_pixel_loop(device: torch.device, raw_maker: BatchMaker) -> None:
    transformer = raw_maker.transformer
    images = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (8, 3, 20, 23), dtype=np.uint8))
    rng = batch_rng(9, 0)
    draws = [transformer.draw(rng, 20, 23) for _ in range(len(images))]
    assert {d.mirror for d in draws} == {True, False} and len({d.h_off for d in draws}) > 1
    loop = transformer.apply(images, draws)  # Caffe's loop on the CPU
    gathered = transformer.apply_gathered(images.to(device), draws)
    assert gathered.device.type == device.type
    assert torch.equal(gathered.cpu(), loop)
