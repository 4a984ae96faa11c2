"""`data io-rate`: a store's random reads timed cold (its pages dropped from the page cache,
mincore's word for how cold) and from the cache, against what N GPUs read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from replicate.cli import main
from replicate.commands.data.io_rate import file_system
from replicate.data.ilsvrc import Images
from replicate.data.readrate import Need, ReadRate, Residency, drop_cache, timed_reads
from replicate.data.splits import ImageList
from replicate.data.store import Store, StoreOptions, build_store
from replicate.data.view import write_view


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A raw store of 48 images of 32x32 (3,072 bytes each) and a view of it."""
    root = tmp_path_factory.mktemp("readrate")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(48):
        names.append(f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(root / "img" / names[-1])
    n = len(names)
    images = Images(names, np.arange(n) % 4, [str(root / "img" / m) for m in names], np.arange(n),
                    np.zeros(n, np.int64), np.full(n, -1, np.int64))
    build_store(root / "store", [("train", images)], StoreOptions("raw", None), show_progress=False)
    opened = Store(root / "store")
    (root / "view").mkdir()
    write_view(root / "view", "view", ImageList("v", names, np.zeros(n, np.int64)), "train", opened,
               opened.records_of("train"), 0)
    opened.close()
    return root


def test_dropping_the_cache_makes_reads_cold_and_reading_warms_them(store: Path) -> None:
    data = store / "store" / "data.bin"
    residency = Residency(data)
    try:
        size = residency.size
        timed_reads(data, np.array([0]), np.array([size]), 1)
        assert residency.resident(0, size) == ((size + 4095) // 4096,) * 2
        drop_cache(data)
        if file_system(data).startswith("tmpfs"):
            pytest.skip("tmpfs keeps a file's pages: they cannot be dropped")
        assert residency.resident(0, size)[0] == 0
    finally:
        residency.close()


def test_io_rate_times_cold_and_warm_reads_and_compares_them_with_the_gpus(store: Path, tmp_path: Path,
                                                                         capsys) -> None:
    out = tmp_path / "io.json"
    assert main(["data", "io-rate", str(store / "view"), "--threads", "1,3", "--records", "20", "--gpus", "1,2",
                 "--images-per-gpu", "100", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["records"] == 48 and report["record_bytes"] == 3072 and report["format"] == "raw"
    cold = not report["file_system"].startswith("tmpfs")
    expected = [(t, c) for t in (1, 3) for c in (("cold", "warm") if cold else ("warm",))]
    assert [(r["threads"], r["cache"]) for r in report["rates"]] == expected
    for r in report["rates"]:
        assert r["records"] == 20 and r["bytes"] == 20 * 3072
        assert r["resident_before"] == (0.0 if r["cache"] == "cold" else 1.0), r
    assert report["need_bytes_per_s"] == {"1": 100 * 3072, "2": 200 * 3072}
    text = capsys.readouterr().out
    assert "1 GPU(s) need 0.00 GB/s: " in text and "2 GPU(s) need 0.00 GB/s: " in text


def test_what_n_gpus_need_and_how_many_a_rate_feeds() -> None:
    need = Need(16, 7500.0, 196608.0)
    assert need.bytes_per_s == pytest.approx(23.6e9, rel=1e-3)  # the "about 25-30 GB/s for 16 GPUs"
    rate = ReadRate("cold", 16, 1000, 1000 * 196608, 0.05, 0.0)
    assert need.gpus_served(rate) == pytest.approx(20000 / 7500)


def test_io_rate_refuses_bad_counts(store: Path, capsys) -> None:
    assert main(["data", "io-rate", str(store / "store"), "--threads", "0"]) == 2
    assert "--threads '0': expected positive whole numbers" in capsys.readouterr().err


def test_report_outputs_are_checked_before_the_measurement(store: Path, tmp_path: Path, capsys) -> None:
    """A measurement of minutes (of scarce GPU time, for bench) must not end in a traceback
    that loses its figures: a report path naming a folder, or through a file, is refused first;
    a missing folder is made."""
    (tmp_path / "afile").write_text("")
    for argv in (["data", "io-rate", str(store / "store"), "--out"], ["bench", "--device", "cpu", "--out"],
                 ["bench", "--device", "cpu", "--markdown"]):
        assert main([*argv, str(tmp_path)]) == 2
        assert capsys.readouterr().err == f"error: {argv[-1]} {tmp_path}: is a folder; name the file to write\n"
        assert main([*argv, str(tmp_path / "afile" / "r.json")]) == 2
        assert f"error: {argv[-1]} {tmp_path / 'afile' / 'r.json'}: cannot make its folder" in capsys.readouterr().err
    assert main(["data", "io-rate", str(store / "store"), "--threads", "1", "--records", "8", "--gpus", "1",
                 "--out", str(tmp_path / "new" / "rate.json")]) == 0
    assert (tmp_path / "new" / "rate.json").is_file()
