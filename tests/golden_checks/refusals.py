"""Nets real Caffe refuses in Net::Init (tools/caffe_readers.py): meta.json holds the line its glog
printed before it aborted; our engine must refuse each too, for the same reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from golden_checks._compare import CPU
from replicate.errors import ReplicateError
from replicate.io.prototxt import read_net_text
from replicate.net.compile import CompiledNet
from replicate.proto import caffe_pb2

#: Per case: what Caffe's abort says, and the words of ours that give the same reason.
REASONS = {
    "refused_in_place_after_readers": ("produced by multiple sources", "Top blob produced by multiple sources"),
    "refused_flatten_in_place": ("Flatten Layer does not allow in-place computation",
                                 r"layer 'flat' \(Flatten\): does not allow in-place computation"),
    "refused_split_in_place": ("Split Layer does not allow in-place computation",
                               r"layer 'split' \(Split\): does not allow in-place computation"),
    "refused_split_without_tops": ("Split Layer produces at least 1 top blob(s)",
                                   r"layer 'split' \(Split\): produces at least 1 top blob"),
    "refused_loss_label_first_axis": ("The data and label should have the same first dimension",
                                      r"layer 'loss' \(SoftmaxWithLoss\): the predictions .* need the same first"),
    "refused_batchnorm_1d": ("axis 1 out of range for 1-D Blob", r"layer 'bn' \(BatchNorm\): input must have a channel axis"),
}


#: Nothing of the engine computes here (a refusal, and Caffe's numbers checked by hand): the
#: GPU tier skips these cases.
DEVICE_FREE = True

def handles(case_name: str) -> bool:
    return case_name.startswith("refused_")


def check(case_dir: Path, device: torch.device = CPU) -> None:
    theirs, ours = REASONS[case_dir.name]
    assert theirs in json.loads((case_dir / "meta.json").read_text())["caffe_error"]
    with pytest.raises(ReplicateError, match=ours):
        CompiledNet(read_net_text(case_dir / "net.prototxt"), caffe_pb2.TRAIN)
