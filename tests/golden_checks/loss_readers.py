"""Nets in which another layer reads a loss layer's top (tools/caffe_readers.py): real Caffe
computes another loss than the net's weighted sum there, so our engine refuses them, and these
checks prove from Caffe's own numbers what it does instead.

- `loss_reader_weighted` (loss_weight 0.5, a ReLU that is no loss reads the top): Caffe logs
  (1 + w) L at the first iteration and 2w L after (InsertSplits moved w to a Split, LossLayer set
  the layer's own to 1 again, and the first backward wrote the Split's w into it), while its
  updates are those of the net's own gradient: ours of the net without the reader.
- `loss_reader_default` (the default loss weight 1, a ReLU with loss_weight 2 reads the top):
  Caffe logs 3L then 4L and trains the loss layer with weight 2, the reader's gradient, instead of
  1 + 2: its updates are ours of the net with loss_weight 2 and no reader.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from golden_checks._compare import CPU, FORWARD_RTOL, assert_close, load_arrays, on
from golden_checks.solver import trajectory
from replicate.errors import ReplicateError
from replicate.io.prototxt import read_net_text
from replicate.net.compile import CompiledNet
from replicate.proto import caffe_pb2

#: Per case: how Caffe's logged loss relates to the loss top L at iteration 1 and after, and the
#: SoftmaxWithLoss line of the net (no reader) whose trajectory ours must match.
EXPECTED = {
    "loss_reader_weighted": (1.5, 1.0, ' loss_weight: 0.5'),
    "loss_reader_default": (3.0, 4.0, ' loss_weight: 2'),
}


def handles(case_name: str) -> bool:
    return case_name.startswith("loss_reader_")


def _refused(case_dir: Path) -> str:
    with pytest.raises(ReplicateError) as caught:
        net = CompiledNet(read_net_text(case_dir / "net.prototxt"), caffe_pb2.TRAIN)
        net.check_trainable()
    return str(caught.value)


def check(case_dir: Path, device: torch.device = CPU) -> None:
    first, later, weight = EXPECTED[case_dir.name]
    message = _refused(case_dir)
    assert "layer 'loss' (SoftmaxWithLoss): its loss top 'loss' is read by layer 'reader' (ReLU)" in message, message
    arrays = load_arrays(case_dir)
    iters = json.loads((case_dir / "meta.json").read_text())["iters"]
    for k in range(1, iters + 1):  # what Caffe's solver logged, against its loss top
        factor = first if k == 1 else later
        assert_close(arrays[f"logged{k}"], factor * arrays[f"loss{k}"], FORWARD_RTOL, f"Caffe's logged loss {k}")
    with tempfile.TemporaryDirectory() as tmp:  # Caffe's updates: ours of the net without the reader
        plain = Path(tmp) / case_dir.name
        shutil.copytree(case_dir, plain)
        text = (case_dir / "net.prototxt").read_text()
        text = re.sub(r'layer \{ name: "reader".*\n', "", text)
        text = re.sub(r'(top: "loss")[^}]*\}', rf"\1{weight} }}", text)
        (plain / "net.prototxt").write_text(text)
        meta = json.loads((case_dir / "meta.json").read_text())
        for key in ("outputs", "blob_loss_weights"):  # Caffe's, of the net with the reader
            meta.pop(key)
        (plain / "meta.json").write_text(json.dumps(meta))
        compared = 0
        for what, ours, caffe in trajectory(plain, device):
            if "after update" in what:
                assert_close(on(device, ours), caffe, FORWARD_RTOL, what)
                compared += 1
        assert compared == 2 * iters
    assert np.isfinite(arrays[f"logged{iters}"])
