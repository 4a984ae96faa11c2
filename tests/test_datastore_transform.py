"""DataTransformer against a line-by-line transcription of Caffe's per-pixel loop
(data_transformer.cpp, Transform(const Datum&, Dtype*)), plus its offsets, randomness and checks."""

import numpy as np
import pytest
import torch

from replicate.data.transform import TEST, TRAIN, DataTransformer, Draw, batch_rng
from replicate.errors import ReplicateError
from replicate.io.binary import write_mean
from replicate.proto import caffe_pb2


def caffe_loop(image, mean, mean_values, scale, crop, h_off, w_off, mirror):
    """Caffe's loop, index arithmetic and float32 operations as written there."""
    c_n, dh, dw = image.shape
    height, width = (crop, crop) if crop else (dh, dw)
    flat, mflat = image.ravel(), None if mean is None else mean.ravel()
    out = np.zeros(c_n * height * width, np.float32)
    values = list(mean_values) * (c_n if len(mean_values) == 1 else 1)
    for c in range(c_n):
        for h in range(height):
            for w in range(width):
                data_index = (c * dh + h_off + h) * dw + w_off + w
                top_index = (c * height + h) * width + (width - 1 - w if mirror else w)
                x = np.float32(flat[data_index])
                if mflat is not None:
                    out[top_index] = (x - mflat[data_index]) * np.float32(scale)
                elif values:
                    out[top_index] = (x - np.float32(values[c])) * np.float32(scale)
                else:
                    out[top_index] = x * np.float32(scale)
    return out.reshape(c_n, height, width)


def _param(**kw):
    return caffe_pb2.TransformationParameter(**kw)


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (2, 3, 11, 14), dtype=np.uint8)


@pytest.fixture
def mean_file(tmp_path):
    mean = np.random.default_rng(1).uniform(0, 255, (1, 3, 11, 14)).astype(np.float32)
    write_mean(tmp_path / "mean.binaryproto", mean)
    return str(tmp_path / "mean.binaryproto"), mean[0]


def test_centre_crop_offsets_use_integer_division():
    t = DataTransformer(_param(crop_size=6), TEST)
    assert t.draw(None, 11, 14) == Draw(2, 4, False)
    assert t.output_shape(3, 11, 14) == (3, 6, 6)


@pytest.mark.parametrize("mirror", [False, True])
def test_mean_file_is_cropped_at_the_image_offset(images, mean_file, mirror):
    path, mean = mean_file
    t = DataTransformer(_param(crop_size=7, mean_file=path, scale=0.25), TEST)
    draws = [Draw(1, 5, mirror), Draw(4, 0, not mirror)]
    out = t.apply(torch.from_numpy(images), draws).numpy()
    for img, d, got in zip(images, draws, out):
        np.testing.assert_array_equal(got, caffe_loop(img, mean, [], 0.25, 7, d.h_off, d.w_off, d.mirror))


@pytest.mark.parametrize("values", [[100.0], [104.0, 117.0, 123.0]])
def test_mean_values_then_scale(images, values):
    t = DataTransformer(_param(mean_value=values, scale=0.017), TEST)
    out = t.apply(torch.from_numpy(images), [Draw(0, 0, False)] * 2).numpy()
    for img, got in zip(images, out):
        np.testing.assert_array_equal(got, caffe_loop(img, None, values, np.float32(0.017), 0, 0, 0, False))


def test_scale_only_and_float_pixels():
    floats = np.random.default_rng(3).normal(size=(1, 2, 5, 5)).astype(np.float32)
    t = DataTransformer(_param(scale=3.0, mirror=True), TEST)
    out = t.apply(torch.from_numpy(floats), [Draw(0, 0, True)]).numpy()
    np.testing.assert_array_equal(out[0], caffe_loop(floats[0], None, [], 3.0, 0, 0, 0, True))


def test_train_crops_are_random_uniform_and_seeded():
    t = DataTransformer(_param(crop_size=8, mirror=True), TRAIN)
    rng = batch_rng(5, 0)
    draws = [t.draw(rng, 11, 14) for _ in range(2000)]
    assert {d.h_off for d in draws} == set(range(4))
    assert {d.w_off for d in draws} == set(range(7))
    assert 0.45 < np.mean([d.mirror for d in draws]) < 0.55
    again = batch_rng(5, 0)
    assert [t.draw(again, 11, 14) for _ in range(2000)] == draws
    other = batch_rng(5, 1)
    assert [t.draw(other, 11, 14) for _ in range(50)] != draws[:50]


def test_test_phase_mirrors_when_asked_like_caffe():
    # Caffe flips a coin for `mirror: true` whatever the phase; only the crop is phase-dependent.
    t = DataTransformer(_param(crop_size=8, mirror=True), TEST)
    draws = [t.draw(batch_rng(0, k), 11, 14) for k in range(40)]
    assert {(d.h_off, d.w_off) for d in draws} == {(1, 3)}
    assert {d.mirror for d in draws} == {False, True}
    assert not DataTransformer(_param(crop_size=8), TEST).needs_random


def test_images_of_other_sizes_in_one_batch_with_crop():
    t = DataTransformer(_param(crop_size=4), TEST)
    a = torch.arange(3 * 6 * 6, dtype=torch.uint8).reshape(3, 6, 6)
    b = torch.arange(3 * 8 * 5, dtype=torch.uint8).reshape(3, 8, 5)
    out = t.apply_each([a, b], [t.draw(None, 6, 6), t.draw(None, 8, 5)])
    assert out.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(out[1].numpy(), caffe_loop(b.numpy(), None, [], 1, 4, 2, 0, False))


def test_bad_parameters_stop_at_construction(tmp_path, mean_file):
    with pytest.raises(ReplicateError, match="mean file .*nope.binaryproto does not exist"):
        DataTransformer(_param(mean_file=str(tmp_path / "nope.binaryproto")), TEST, "layer 'data'")
    with pytest.raises(ReplicateError, match="mean_file and mean_value"):
        DataTransformer(_param(mean_file=mean_file[0], mean_value=[1.0]), TEST)
    with pytest.raises(ReplicateError, match="force_color and force_gray"):
        DataTransformer(_param(force_color=True, force_gray=True), TEST)


def test_shape_mismatches_are_reported(mean_file):
    with pytest.raises(ReplicateError, match="mean file .* is 3x11x14 but the images are 3x12x14"):
        DataTransformer(_param(mean_file=mean_file[0]), TEST).output_shape(3, 12, 14)
    with pytest.raises(ReplicateError, match="crop_size 20 exceeds the image size 11x14"):
        DataTransformer(_param(crop_size=20), TEST).output_shape(3, 11, 14)
    with pytest.raises(ReplicateError, match="1 mean_value or as many as channels \\(3\\), not 2"):
        DataTransformer(_param(mean_value=[1, 2]), TEST).output_shape(3, 11, 14)


@pytest.mark.parametrize("kind", ["mean_file", "mean_values", "scale_only", "no_crop"])
def test_the_gpu_batch_gather_equals_caffes_loop(mean_file, kind):
    """apply_gathered (what a GPU runs: one gather per batch) gives Caffe's values bit for bit,
    each image with its own crop offset and mirror flag."""
    images = np.random.default_rng(4).integers(0, 256, (6, 3, 11, 14), dtype=np.uint8)
    path, mean = mean_file
    settings = {
        "mean_file": (dict(crop_size=7, mean_file=path, scale=0.25), mean, []),
        "mean_values": (dict(crop_size=5, mean_value=[104.0, 117.0, 123.0], scale=0.017), None, [104.0, 117.0, 123.0]),
        "scale_only": (dict(crop_size=9, scale=3.0), None, []),
        "no_crop": (dict(mean_file=path), mean, []),
    }
    fields, m, values = settings[kind]
    t = DataTransformer(_param(mirror=True, **fields), TRAIN)
    rng = batch_rng(9, 0)
    draws = [t.draw(rng, 11, 14) for _ in images]
    assert {d.mirror for d in draws} == {False, True}
    out = t.apply_gathered(torch.from_numpy(images), draws).numpy()
    crop = fields.get("crop_size", 0)
    for img, d, got in zip(images, draws, out):
        np.testing.assert_array_equal(got, caffe_loop(img, m, values, fields.get("scale", 1.0), crop, d.h_off, d.w_off, d.mirror))
    np.testing.assert_array_equal(out, t.apply(torch.from_numpy(images), draws).numpy())
