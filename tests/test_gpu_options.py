"""Speed options leave Caffe's arithmetic alone: channels_last and torch.compile train a small net
to the same weights and losses as the plain path; the run records its precision and options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gpu_support import metrics, run_dir, weights

from replicate.bench.step import caffenet
from replicate.cli import main
from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2
from replicate.results.logs import read_metrics
from replicate.solver.nets import NetSpec
from replicate.solver.run import train
from replicate.solver.device import set_precision
from replicate.solver.solver import build_net


def _train(folder: Path, **options) -> tuple[dict[str, list[np.ndarray]], list[float]]:
    solver = run_dir(folder)
    train(solver, device="cpu", echo=False, **options)
    losses = [m["loss"] for m in metrics(folder) if m["kind"] == "train"]
    return weights(folder / "snap_iter_4.caffemodel"), losses


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[np.ndarray]], list[float]]:
    """The plain path's weights and losses, trained once for every option compared with it."""
    return _train(tmp_path_factory.mktemp("plain") / "plain")


@pytest.mark.parametrize("options", [
    {"channels_last": True},
    pytest.param({"compile": "aot_eager"}, marks=pytest.mark.compiled),
    pytest.param({"channels_last": True, "compile": "aot_eager"}, marks=pytest.mark.compiled),
    {"data_workers": 2},
])
def test_speed_options_train_like_the_plain_path(tmp_path: Path, options: dict, plain: tuple) -> None:
    plain, plain_losses = plain
    fast, fast_losses = _train(tmp_path / "fast", **options)
    for name in plain:
        for a, b in zip(plain[name], fast[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain_losses, fast_losses, rtol=1e-5)
    config = metrics(tmp_path / "fast")[0]
    assert config["kind"] == "config" and config["channels_last"] == options.get("channels_last", False)
    assert config["data_path"] == "cpu" and config["data_workers"] == options.get("data_workers", 0)


def test_channels_last_really_changes_the_layout() -> None:
    spec = NetSpec(caffenet(1), caffe_pb2.TRAIN, (), 0, "test", Path("."))
    net = build_net(spec, torch.device("cpu"), channels_last=True)
    conv = net.layer_blobs()["conv1"][0]
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_precision_is_recorded_and_read_back(tmp_path: Path) -> None:
    _train(tmp_path / "run", precision="bf16")
    set_precision("fp32")
    config = read_metrics(tmp_path / "run" / "metrics.jsonl").config
    assert config == {**metrics(tmp_path / "run")[0], "precision": "bf16", "device": "cpu", "world_size": 1}
    assert config["torch"] == torch.__version__ and config["compile"] is False
    assert "precision bf16" in (tmp_path / "run" / "train.log").read_text()


def test_fp32_turns_tf32_off_and_unknown_precisions_fail() -> None:
    set_precision("tf32")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    set_precision("fp32")
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.benchmark
    with pytest.raises(ReplicateError, match="unknown precision 'fp16'"):
        set_precision("fp16")


def test_a_negative_number_of_data_workers_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReplicateError, match="data workers must be 0 or more, not -1"):
        train(run_dir(tmp_path / "run"), device="cpu", echo=False, data_workers=-1)
    assert main(["bench", "--device", "cpu", "--workers", "-2"]) == 2
    assert "--workers must be 0 or more, not -2" in capsys.readouterr().err
