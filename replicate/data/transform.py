"""Caffe's DataTransformer: mean subtraction, scale, crop and mirror, with Caffe's arithmetic.

For every output pixel Caffe computes, in float32, `(pixel - mean[c, h_off + h, w_off + w]) * scale`
with a mean file (the mean is cropped at the image's own crop offset), `(pixel - mean_value[c]) *
scale` with per-channel mean values, or `pixel * scale`; mirroring writes column `w` to `width - 1
- w`.  Offsets: a random crop in TRAIN (`h_off` uniform in `0..H - crop`), the centre crop
`(H - crop) / 2` (integer division) in TEST.  Mirroring, when `mirror: true`, is a coin flip per
image in *both* phases (Caffe does not look at the phase for it; the paper's val nets say
`mirror: false`).  Channels stay in the order stored (BGR for colour images).

Randomness comes from an explicit numpy Generator, so that a batch's crops and flips depend only
on (seed, batch number) and several loader workers reproduce what one process would do.  Caffe's
own boost::mt19937 stream is not reproduced.

The arithmetic runs on torch tensors of any device, so the same code serves the CPU loaders and
the GPU path (where the images are already on the GPU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from replicate.errors import ReplicateError
from replicate.io.binary import read_mean
from replicate.proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


@dataclass(frozen=True)
class Draw:
    """The random choices for one image: crop offsets and whether to mirror."""

    h_off: int
    w_off: int
    mirror: bool


class DataTransformer:
    """One layer's `transform_param`, checked and with its mean loaded, applied to CHW images.

    A missing or unreadable mean file, or mean_file together with mean_value, stops here, when the
    layer is built.  `where` names the layer in errors.
    """

    def __init__(self, param: caffe_pb2.TransformationParameter, phase: int, where: str = "transform_param"):
        self.param = param
        self.phase = phase
        self.where = where
        self.crop = int(param.crop_size)
        self.scale = float(np.float32(param.scale))
        self.mirror = bool(param.mirror)
        if param.force_color and param.force_gray:
            raise ReplicateError(f"{where}: cannot set both force_color and force_gray")
        if param.HasField("mean_file") and len(param.mean_value):
            raise ReplicateError(f"{where}: cannot specify mean_file and mean_value at the same time")
        self.mean: np.ndarray | None = None
        if param.HasField("mean_file"):
            if not os.path.isfile(param.mean_file):
                raise ReplicateError(f"{where}: mean file {param.mean_file} does not exist")
            mean = read_mean(param.mean_file)
            if mean.ndim == 4 and mean.shape[0] == 1:
                mean = mean[0]
            if mean.ndim != 3:
                raise ReplicateError(f"{where}: mean file {param.mean_file} has shape {mean.shape}, not 1xCxHxW")
            self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.mean_values = [float(v) for v in param.mean_value]
        self._mean_cache: dict[torch.device, torch.Tensor] = {}

    @property
    def needs_random(self) -> bool:
        return self.mirror or (self.phase == TRAIN and self.crop > 0)

    def output_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        """Caffe's InferBlobShape for one image (also checks the crop fits)."""
        self._check(channels, height, width)
        if self.crop:
            return channels, self.crop, self.crop
        return channels, height, width

    def _check(self, channels: int, height: int, width: int) -> None:
        if self.crop and (height < self.crop or width < self.crop):
            raise ReplicateError(f"{self.where}: crop_size {self.crop} exceeds the image size {height}x{width}")
        if self.mean is not None and self.mean.shape != (channels, height, width):
            raise ReplicateError(
                f"{self.where}: mean file {self.param.mean_file} is {'x'.join(map(str, self.mean.shape))} "
                f"but the images are {channels}x{height}x{width}"
            )
        if self.mean_values and len(self.mean_values) not in (1, channels):
            raise ReplicateError(
                f"{self.where}: specify either 1 mean_value or as many as channels ({channels}), "
                f"not {len(self.mean_values)}"
            )

    def draw(self, rng: np.random.Generator | None, height: int, width: int) -> Draw:
        """Crop offsets and mirror flag for an image of `height` x `width`."""
        mirror = bool(self.mirror and rng.integers(2))
        if not self.crop:
            return Draw(0, 0, mirror)
        if self.phase == TRAIN:
            return Draw(int(rng.integers(height - self.crop + 1)), int(rng.integers(width - self.crop + 1)), mirror)
        return Draw((height - self.crop) // 2, (width - self.crop) // 2, mirror)

    def _mean_on(self, device: torch.device) -> torch.Tensor | None:
        if self.mean is None:
            return None
        if device not in self._mean_cache:
            self._mean_cache[device] = torch.from_numpy(self.mean).to(device)
        return self._mean_cache[device]

    def _channel_means(self, channels: int, device: torch.device) -> torch.Tensor | None:
        """mean_value as a C x 1 x 1 tensor (one value serves every channel), or None."""
        if not self.mean_values:
            return None
        values = self.mean_values * channels if len(self.mean_values) == 1 else self.mean_values
        return torch.tensor(values, dtype=torch.float32, device=device).view(channels, 1, 1)

    def apply(self, images: torch.Tensor | Sequence[torch.Tensor], draws: Sequence[Draw],
              out: torch.Tensor | None = None) -> torch.Tensor:
        """Transform images (an N x C x H x W stack, or on the CPU a list of CHW images that may
        differ in size; uint8 or float32) with one Draw each; returns float32 N x C x out_h x out_w
        on their device, written into `out` when given (a worker fills shared memory in place).

        Per image: crop the pixels and the mean at the same offset, subtract, flip if drawn, then
        scale the batch; the same float32 operations in the same order as Caffe's loop.  On the
        CPU image-by-image slicing is ~3x faster than one batched gather; on a GPU it would be
        ~4 kernel launches per image, so there the batch goes through `apply_gathered`.
        """
        if isinstance(images, torch.Tensor) and images.device.type != "cpu":
            result = self.apply_gathered(images, draws)
            return result if out is None else out.copy_(result)
        first = images[0]
        c, h, w = first.shape
        device = first.device
        out_h, out_w = (self.crop, self.crop) if self.crop else (h, w)
        mean = self._mean_on(device)
        per_pixel = mean is not None
        if mean is None:
            mean = self._channel_means(c, device)
        if out is None:
            out = torch.empty((len(draws), c, out_h, out_w), dtype=torch.float32, device=device)
        for i, d in enumerate(draws):
            image = images[i]
            if image.shape[0] != c:
                raise ReplicateError(f"{self.where}: the images of one batch have {c} and {image.shape[0]} channels; "
                                     "set force_color or force_gray")
            self._check(*image.shape)
            rows, cols = slice(d.h_off, d.h_off + out_h), slice(d.w_off, d.w_off + out_w)
            x = image[:, rows, cols].to(torch.float32)
            if mean is not None:
                x = x - (mean[:, rows, cols] if per_pixel else mean)
            out[i] = x.flip(-1) if d.mirror else x
        if self.scale != 1.0:
            out.mul_(self.scale)
        return out

    def apply_gathered(self, images: torch.Tensor, draws: Sequence[Draw]) -> torch.Tensor:
        """`apply` as one gather for the whole batch: every output pixel (n, c, i, j) reads image
        n and the mean at row h_off + i and column w_off + j (w_off + out_w - 1 - j when
        mirrored), then the same float32 subtract and scale, so the values equal `apply`'s bit
        for bit.  A handful of kernels per batch whatever its size, which is what a GPU wants."""
        n, c, h, w = images.shape
        self._check(c, h, w)
        device = images.device
        out_h, out_w = (self.crop, self.crop) if self.crop else (h, w)
        offsets = torch.tensor([(d.h_off, d.w_off, d.mirror) for d in draws], dtype=torch.long).view(n, 3)
        offsets = offsets.to(device, non_blocking=True)
        span_w = torch.arange(out_w, device=device)
        columns = offsets[:, 1:2] + torch.where(offsets[:, 2:3].bool(), span_w.flip(0), span_w)  # N x out_w
        rows = offsets[:, 0:1] + torch.arange(out_h, device=device)  # N x out_h
        rows, columns = rows[:, None, :, None], columns[:, None, None, :]
        channel = torch.arange(c, device=device)[None, :, None, None]
        out = images[torch.arange(n, device=device)[:, None, None, None], channel, rows, columns].to(torch.float32)
        mean = self._mean_on(device)
        if mean is not None:
            out = out - mean[channel, rows, columns]
        elif self.mean_values:
            out = out - self._channel_means(c, device)
        if self.scale != 1.0:
            out.mul_(self.scale)
        return out

    def apply_each(self, images: Sequence[torch.Tensor], draws: Sequence[Draw],
                   out: torch.Tensor | None = None) -> torch.Tensor:
        """Transform CHW images that may differ in size (Caffe allows it when cropping): on the
        CPU image by image straight from the list (no stacked copy first), on a device as one
        stack when they are of one size."""
        if images[0].device.type == "cpu":
            return self.apply(images, draws, out)
        if len({tuple(img.shape) for img in images}) == 1:
            return self.apply(torch.stack(list(images)), draws, out)
        return torch.cat([self.apply(img[None], [d]) for img, d in zip(images, draws)], out=out)


def batch_rng(seed: int, batch: int) -> np.random.Generator:
    """The generator for batch number `batch` of a source seeded with `seed`."""
    return np.random.default_rng([seed & 0xFFFFFFFF, batch])
