"""`bench` on CPU: step, loader and end-to-end measurements land in the JSON with their settings;
the FLOP count and peak table give CaffeNet's known figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from replicate.bench.peak import peak_tflops, step_flops
from replicate.bench.step import caffenet
from replicate.data.image import encode_jpeg
from replicate.cli import main
from replicate.data.lmdb_io import array_datum, encoded_datum, write_lmdb
from replicate.net.compile import CompiledNet
from replicate.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[1]


def test_caffenet_step_is_about_4_1_gflop_per_image_and_peaks_are_by_device_name() -> None:
    net = CompiledNet(caffenet(1), caffe_pb2.TRAIN)
    assert abs(step_flops(net) / 1e9 - 4.14) < 0.01
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "fp32") == 51.0
    assert peak_tflops("NVIDIA H200", "tf32") == 494.7
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") is None
    assert peak_tflops("cpu", "fp32") is None


def test_bench_on_cpu_writes_every_measurement(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    write_lmdb(tmp_path / "raw", [(f"{i}", array_datum(im.transpose(2, 0, 1), i)) for i, im in enumerate(images)])
    write_lmdb(tmp_path / "jpeg", [(f"{i}", encoded_datum(encode_jpeg(im), i)) for i, im in enumerate(images)])
    (tmp_path / "jpegs").mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / "jpegs" / f"{i}.jpg")
    (tmp_path / "train.txt").write_text("".join(f"{i}.jpg {i % 2}\n" for i in range(4)))
    (tmp_path / "synsets.txt").write_text("n00000001\nn00000002\n")
    (tmp_path / "families.txt").write_text("n00000001 natural\nn00000002 man-made\n")
    assert main(["data", "prepare", "--format", "jpeg", "--train", str(tmp_path / "train.txt"), "--train-root",
                 str(tmp_path / "jpegs"), "--synsets", str(tmp_path / "synsets.txt"), "--families",
                 str(tmp_path / "families.txt"), "--splits", "0", "--reduced", "", "--resize", "64", "64",
                 "--workers", "1", "--out", str(tmp_path / "data")]) == 0
    view = tmp_path / "data" / "whole_train"
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, "-m", "replicate", "bench", "--device", "cpu", "--batch", "2", "--iterations", "1",
         "--warmup", "1", "--precision", "all", "--view", str(view),
         "--lmdb", str(tmp_path / "raw"), "--lmdb", str(tmp_path / "jpeg"),
         "--jpeg-dir", str(tmp_path / "jpegs"), "--loader-batches", "2", "--out", str(out),
         "--markdown", str(tmp_path / "bench.md")],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["torch"]
    assert [r["precision"] for r in report["step"]] == ["fp32", "tf32", "bf16"]
    for r in report["step"] + report["end_to_end"]:
        assert r["ms_per_step"] > 0 and r["images_per_s"] > 0 and r["fraction_of_peak"] is None
    assert [e["kind"] for e in report["loaders"]] == ["view-jpeg", "lmdb-raw", "lmdb-jpeg", "jpeg-folder"]
    assert all(e["images_per_s"]["serial"] > 0 for e in report["loaders"])
    assert all(e["consumer_cpu_s_per_image"]["serial"] > 0 for e in report["loaders"])
    assert report["loaders"][1]["crop"] == 64
    assert [r["data"] for r in report["end_to_end"]] == [str(view)] * 3
    assert all(r["data_path"] == "cpu" and r["data_workers"] == 0 for r in report["end_to_end"])
    table = (tmp_path / "bench.md").read_text()
    assert "| fp32 | plain |" in table and "| bf16 from " in table and "| lmdb-jpeg " in table
    step_rows = [line for line in table.splitlines() if line.startswith(("| fp32 |", "| tf32 |", "| bf16 |"))]
    assert len(step_rows) == 3 and all(row.endswith(": not met |") for row in step_rows)  # no CPU meets them
    e2e_rows = [line for line in table.splitlines() if " from " in line]
    assert len(e2e_rows) == 3 and all(">= 80%: " in row for row in e2e_rows)


def test_loaders_only_reports_what_receiving_costs_the_training_process(tmp_path: Path) -> None:
    """Per worker path: images/s, the training process's CPU per image and the ceiling it sets, and
    the first batch checked against the serial path's."""
    images = np.random.default_rng(1).integers(0, 256, (6, 3, 40, 40), dtype=np.uint8)
    write_lmdb(tmp_path / "raw", [(f"{i}", array_datum(im, i)) for i, im in enumerate(images)])
    out = tmp_path / "bench.json"
    assert main(["bench", "--device", "cpu", "--batch", "3", "--lmdb", str(tmp_path / "raw"), "--workers", "1",
                 "--loaders-only", "--loader-batches", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["step"] == [] and report["end_to_end"] == []
    (entry,) = report["loaders"]
    assert set(entry["images_per_s"]) == {"serial", "workers_1"}
    cost, ceiling = entry["consumer_cpu_s_per_image"]["workers_1"], entry["consumer_ceiling_images_per_s"]["workers_1"]
    assert cost > 0 and abs(ceiling * cost - 1) < 1e-9
    assert entry["max_abs_diff_vs_serial"] == {"serial": None, "workers_1": 0.0}


def test_bench_times_conv1_as_space_to_depth_on_request(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--device", "cpu", "--batch", "1", "--iterations", "1", "--warmup", "0",
                 "--space-to-depth", "--out", str(out)]) == 0
    (step,) = json.loads(out.read_text())["step"]
    assert step["space_to_depth"] == ["conv1"] and step["images_per_s"] > 0


def test_sweep_times_every_layout_and_compile_combination(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, "-m", "replicate", "bench", "--device", "cpu", "--batch", "1", "--iterations", "1",
         "--warmup", "0", "--sweep", "--compile-backend", "eager", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    steps = json.loads(out.read_text())["step"]
    assert [(r["channels_last"], r["compile"]) for r in steps] == [
        (False, False), (True, False), (False, "eager"), (True, "eager")]


def test_bench_times_the_plain_pytorch_peer_and_a_test_pass_beside_our_step(tmp_path: Path) -> None:
    out, tables = tmp_path / "bench.json", tmp_path / "bench.md"
    subprocess.run(
        [sys.executable, "-m", "replicate", "bench", "--device", "cpu", "--batch", "1", "--iterations", "1",
         "--warmup", "1", "--compile", "--compile-backend", "eager", "--peer", "--test-pass", "--test-iter", "2",
         "--test-batch", "1", "--out", str(out), "--markdown", str(tables)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    report = json.loads(out.read_text())
    assert report["settings"]["peer"] and report["cpu"] and report["date"] and "--peer" in report["command"]
    (step,) = report["step"]
    assert step["one_graph"] and not step["cuda_graph"] and step["waits_for_device"] is None
    assert [(c["checked"], c["passed"]) for c in step["compile_checks"]] == [("training iteration", True)]
    assert [(r["compile"], r["channels_last"], r["batch"]) for r in report["peer"]] == [(False, False, 1), ("eager", False, 1)]
    assert all(r["ms_per_step"] > 0 for r in report["peer"])
    (test_pass,) = report["test_pass"]
    assert (test_pass["test_iter"], test_pass["batch"], test_pass["compile"]) == (2, 1, "eager") and test_pass["seconds"] > 0
    assert [(c["checked"], c["passed"]) for c in test_pass["compile_checks"]] == [("test net #0", True)]
    rows = [line for line in tables.read_text().splitlines() if line.startswith("| fp32 | compile |")]
    assert len(rows) == 3  # step, against the peer, test pass
    assert rows[1].endswith(("x | met |", "x | not met |")) and "| 2 x 1 |" in rows[2]


def test_the_device_decoder_is_timed_alone_over_jpeg_records(tmp_path: Path, monkeypatch) -> None:
    """decode_rate times decode_jpegs alone over the batches' JPEG records, read beforehand (the GPU
    path's ceiling where nvjpeg bounds it); raw records have no decoder to time."""
    pytest.importorskip("torchvision")
    from replicate.data import loader, throughput
    from replicate.data.loader import decode_jpegs
    from replicate.data.sources import LmdbSource

    images = np.random.default_rng(2).integers(0, 256, (5, 20, 21, 3), dtype=np.uint8)
    write_lmdb(tmp_path / "jpeg", [(f"{i}", encoded_datum(encode_jpeg(im), i)) for i, im in enumerate(images)])
    write_lmdb(tmp_path / "raw", [(f"{i}", array_datum(im.transpose(2, 0, 1).copy(), i)) for i, im in enumerate(images)])
    calls = []

    def counted(device, blobs, *args):
        calls.append(len(blobs))
        return decode_jpegs(device, blobs, *args)

    monkeypatch.setattr(loader, "decode_jpegs", counted)
    for kind in ("jpeg", "raw"):
        source = LmdbSource(tmp_path / kind)
        try:
            rate = throughput.decode_rate(throughput.train_maker(source, 2, crop=16), 3, "cpu")
        finally:
            source.close()
        if kind == "jpeg":
            assert calls == [2, 2, 2, 2] and rate.images_per_s > 0 and rate.consumer_cpu_s_per_image > 0
        else:
            assert rate is None and calls == [2, 2, 2, 2]
