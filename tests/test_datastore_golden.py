"""The data golden case through its checker (the engine's runner checks every case folder too)."""

from pathlib import Path

import numpy as np
import pytest

from replicate.data.lmdb_io import LmdbReader, datum_array
from replicate.data.mean import compute_mean
from replicate.io.binary import read_mean
from golden_checks import data as data_check

GOLDEN = Path(__file__).parent / "golden"


def test_data_lmdb_mean_matches_caffe():
    assert data_check.handles("data_lmdb_mean")
    assert not data_check.handles("relu")
    data_check.check(GOLDEN / "caffe" / "data_lmdb_mean")


@pytest.mark.parametrize("name", ["train_lmdb", "val_lmdb"])
def test_e2e_lmdbs_read(name):
    reader = LmdbReader(GOLDEN / "caffe_train_e2e" / name)
    assert len(reader) == {"train_lmdb": 40, "val_lmdb": 16}[name]
    first = reader.datum(0)
    assert datum_array(first, "x").shape == (3, 16, 16)
    assert {reader.datum(i).label for i in range(len(reader))} <= set(range(5))


def test_e2e_mean_is_compute_image_mean_of_train():
    root = GOLDEN / "caffe_train_e2e"
    np.testing.assert_array_equal(compute_mean(root / "train_lmdb"), read_mean(root / "mean.binaryproto"))
