"""The Data and ImageData layers: shapes, order, wrap-around, seeding and errors at build time."""

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image

from replicate.data.image import encode_jpeg, read_image, resize_linear
from replicate.data.lmdb_io import array_datum, encoded_datum, write_lmdb
from replicate.errors import ReplicateError
from replicate.io.binary import write_mean
from replicate.io.prototxt import parse_text
from replicate.layers.base import layer_class
from replicate.proto import caffe_pb2


def build(text, phase=caffe_pb2.TEST):
    param = parse_text(text, caffe_pb2.LayerParameter())
    return layer_class(param)(param, phase, [])


@pytest.fixture
def lmdb5(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 9, 10), dtype=np.uint8)
    write_lmdb(tmp_path / "db", [(f"i{i}.jpg", array_datum(img, 10 + i)) for i, img in enumerate(images)])
    return tmp_path / "db", images


def data_layer(path, transform="", batch=3, tops='top: "data" top: "label"'):
    return f'name: "data" type: "Data" {tops} transform_param {{ {transform} }} data_param {{ source: "{path}" batch_size: {batch} backend: LMDB }}'


def test_data_layer_order_shapes_and_wraparound(lmdb5):
    path, images = lmdb5
    layer = build(data_layer(path, "scale: 2"))
    assert layer.top_shapes == [(3, 3, 9, 10), (3,)]
    labels = [layer.forward()[1].tolist() for _ in range(3)]
    assert labels == [[10, 11, 12], [13, 14, 10], [11, 12, 13]]
    data, label = build(data_layer(path, "scale: 2")).forward()
    assert data.dtype == torch.float32 and label.dtype == torch.float32 and data.device.type == "cpu"
    np.testing.assert_array_equal(data.numpy(), images[:3].astype(np.float32) * 2)


def test_data_layer_with_one_top_has_no_labels(lmdb5):
    layer = build(data_layer(lmdb5[0], "crop_size: 4", tops='top: "data"'))
    assert layer.top_shapes == [(3, 3, 4, 4)]
    (data,) = layer.forward()
    assert data.shape == (3, 3, 4, 4)


def test_missing_source_or_mean_stops_at_construction(lmdb5, tmp_path):
    with pytest.raises(ReplicateError, match="layer 'data' \\(Data\\): .*nope.* does not exist"):
        build(data_layer(tmp_path / "nope"))
    with pytest.raises(ReplicateError, match="layer 'data' \\(Data\\): mean file .*absent.binaryproto does not exist"):
        build(data_layer(lmdb5[0], f'mean_file: "{tmp_path / "absent.binaryproto"}"'))
    with pytest.raises(ReplicateError, match="takes 0 bottom"):
        param = parse_text(data_layer(lmdb5[0]), caffe_pb2.LayerParameter())
        layer_class(param)(param, caffe_pb2.TEST, [(1, 3, 9, 10)])


def test_legacy_transform_fields_must_be_upgraded_first(lmdb5):
    text = data_layer(lmdb5[0]).replace("backend: LMDB", "backend: LMDB crop_size: 4 mirror: true")
    with pytest.raises(ReplicateError, match="legacy DataParameter fields crop_size, mirror: load the net through the upgrade"):
        build(text)


def test_mean_file_shape_must_match_records(lmdb5, tmp_path):
    write_mean(tmp_path / "m.binaryproto", np.zeros((1, 3, 8, 10), np.float32))
    with pytest.raises(ReplicateError, match="is 3x8x10 but the images are 3x9x10"):
        build(data_layer(lmdb5[0], f'mean_file: "{tmp_path / "m.binaryproto"}"'))


def test_a_crop_larger_than_the_records_names_the_layer_once(lmdb5):
    with pytest.raises(ReplicateError) as err:
        build(data_layer(lmdb5[0], "crop_size: 227"))
    assert str(err.value) == "layer 'data' (Data): crop_size 227 exceeds the image size 9x10"


def test_train_randomness_follows_torch_seed_and_configure(lmdb5):
    text = data_layer(lmdb5[0], "crop_size: 5 mirror: true", batch=4)
    torch.manual_seed(7)
    a = build(text, caffe_pb2.TRAIN).forward()[0]
    torch.manual_seed(7)
    b = build(text, caffe_pb2.TRAIN).forward()[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    layers = [build(text, caffe_pb2.TRAIN) for _ in range(2)]
    for layer in layers:
        layer.configure(seed=123)
    outs = [[layer.forward()[0] for _ in range(3)] for layer in layers]
    for x, y in zip(*outs):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_worker_processes_give_the_serial_batches(lmdb5):
    text = data_layer(lmdb5[0], "crop_size: 5 mirror: true scale: 0.5", batch=3)
    serial, parallel = build(text, caffe_pb2.TRAIN), build(text, caffe_pb2.TRAIN)
    serial.configure(seed=11)
    parallel.configure(seed=11, workers=2)
    try:
        for _ in range(5):  # wraps around the 5 records three times
            for x, y in zip(serial.forward(), parallel.forward()):
                torch.testing.assert_close(x, y, rtol=0, atol=0)
    finally:
        parallel._loader.close()


def test_encoded_records_decode_and_force_gray(tmp_path):
    yy, xx = np.mgrid[0:12, 0:16]
    hwc = np.stack([xx * 10, yy * 10, xx + yy], axis=2).astype(np.uint8)
    write_lmdb(tmp_path / "enc", [(f"{i}.jpg", encoded_datum(encode_jpeg(hwc), i)) for i in range(3)])
    layer = build(data_layer(tmp_path / "enc", "crop_size: 10", batch=2))
    assert layer.top_shapes[0] == (2, 3, 10, 10)
    data, label = layer.forward()
    assert np.abs(data[0].numpy() - hwc[1:11, 3:13].transpose(2, 0, 1)).mean() < 3
    gray = build(data_layer(tmp_path / "enc", "force_gray: true", batch=2))
    assert gray.top_shapes[0] == (2, 1, 12, 16)


def test_corrupt_record_stops_with_its_key(lmdb5):
    env = lmdb.open(str(lmdb5[0]))
    with env.begin(write=True) as txn:
        txn.put(b"00000003_i3.jpg", b"\x08\x03\x10")  # channels 3, height missing
    env.close()
    layer = build(data_layer(lmdb5[0]))
    layer.forward()
    with pytest.raises(ReplicateError, match="00000003_i3.jpg\\]: corrupt Datum"):
        layer.forward()


@pytest.fixture
def image_list(tmp_path):
    rng = np.random.default_rng(4)
    (tmp_path / "imgs").mkdir()
    lines = []
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"p {i}.png")
        lines.append(f"p {i}.png {i * 2}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def image_data(root, extra="", batch=2):
    return (
        f'name: "img" type: "ImageData" top: "data" top: "label" '
        f'image_data_param {{ source: "{root / "list.txt"}" root_folder: "{root}/imgs/" batch_size: {batch} {extra} }}'
    )


def test_image_data_reads_resizes_and_wraps(image_list):
    layer = build(image_data(image_list, "new_height: 16 new_width: 12"))
    assert layer.top_shapes == [(2, 3, 16, 12), (2,)]
    batches = [layer.forward() for _ in range(3)]
    assert [b[1].tolist() for b in batches] == [[0, 2], [4, 6], [8, 0]]
    expected = resize_linear(read_image(image_list / "imgs" / "p 1.png"), 16, 12).transpose(2, 0, 1)
    np.testing.assert_array_equal(batches[0][0][1].numpy(), expected.astype(np.float32))


def test_image_data_grey_and_shuffle(image_list):
    grey = build(image_data(image_list, "new_height: 8 new_width: 8 is_color: false"))
    assert grey.top_shapes[0] == (2, 1, 8, 8)
    layer = build(image_data(image_list, "new_height: 8 new_width: 8 shuffle: true", batch=5))
    layer.configure(seed=3)
    epochs = [sorted(layer.forward()[1].tolist()) for _ in range(2)]
    assert epochs == [[0, 2, 4, 6, 8]] * 2  # each pass is a permutation of the list
    orders = set()
    for seed in range(6):
        again = build(image_data(image_list, "new_height: 8 new_width: 8 shuffle: true", batch=5))
        again.configure(seed=seed)
        orders.add(tuple(again.forward()[1].tolist()))
    assert len(orders) > 1


def test_image_data_errors(image_list):
    with pytest.raises(ReplicateError, match="layer 'img' \\(ImageData\\): .*nope.txt: cannot read image list"):
        build(image_data(image_list).replace("list.txt", "nope.txt"))
    (image_list / "list.txt").write_text("p 0.png zero\n")
    with pytest.raises(ReplicateError, match="list.txt:1: expected '<path> <integer label>'"):
        build(image_data(image_list))
    (image_list / "list.txt").write_text("gone.png 1\n")
    with pytest.raises(ReplicateError, match="layer 'img' \\(ImageData\\): .*gone.png: cannot read image"):
        build(image_data(image_list))
    with pytest.raises(ReplicateError, match="new_height and new_width must be set together"):
        build(image_data(image_list, "new_height: 8"))
    # Caffe's ImageData has exactly two tops ("ExactNumTopBlobs() == top.size() (2 vs. 1)", found by
    # tools/caffe_fuzz_data.py against BVLC master); Data takes one or two.
    with pytest.raises(ReplicateError, match="has exactly 2 tops \\(data, label\\), as Caffe's ImageData, not 1"):
        build(image_data(image_list).replace(' top: "label"', ""))
    # A record that cannot be decoded, met in a later batch, is named with its layer.
    (image_list / "imgs" / "bad.png").write_bytes(b"\x89PNG not really")
    (image_list / "list.txt").write_text("p 0.png 0\nbad.png 1\n")
    layer = build(image_data(image_list, batch=1))
    layer.forward()
    with pytest.raises(ReplicateError, match=r"^layer 'img' \(ImageData\): .*bad.png: cannot decode image"):
        layer.forward()


def test_rand_skip_starts_at_a_seeded_random_record(lmdb5):
    text = data_layer(lmdb5[0], batch=1).replace("backend: LMDB", "backend: LMDB rand_skip: 4")
    starts = set()
    for seed in range(12):
        torch.manual_seed(seed)
        starts.add(int(build(text).forward()[1].item()) - 10)
    assert starts <= set(range(4)) and len(starts) > 1
    torch.manual_seed(5)
    first = build(text).forward()[1].item()
    torch.manual_seed(5)
    assert build(text).forward()[1].item() == first
