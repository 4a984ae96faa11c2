"""The ImageData layer: batches read straight from image files named in a list.

Caffe's ImageDataLayer: `image_data_param.source` is a list of `<path> <label>` lines, each image
is `root_folder + path` (plain string concatenation, as Caffe does), read in colour (BGR) or grey
(`is_color`), resized to new_height x new_width with OpenCV-style bilinear interpolation when both
are set, then transformed like Data's records.  The list is read in order and wraps around;
`shuffle` draws a new order at the start and at every wrap.  A missing list or first image stops
when the layer is built.
"""

from __future__ import annotations

from collections.abc import Sequence

from replicate.data.imagelist import read_image_list
from replicate.data.sources import ImageListSource
from replicate.errors import ReplicateError
from replicate.layers.base import Shape, register
from replicate.layers.data import BatchLayer
from replicate.proto import caffe_pb2


@register("ImageData")
class ImageData(BatchLayer):
    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        ip = param.image_data_param
        self._check_upgraded(ip)
        if len(param.top) != 2:  # Caffe's ImageDataLayer: ExactNumTopBlobs 2, where Data takes 1 or 2
            raise self.error(f"has exactly 2 tops (data, label), as Caffe's ImageData, not {len(param.top)}")
        if not ip.source:
            raise self.error("image_data_param.source is not set")
        if (ip.new_height > 0) != (ip.new_width > 0):
            raise self.error("new_height and new_width must be set together")
        try:
            entries = read_image_list(ip.source)
        except ReplicateError as err:
            raise self.error(str(err)) from None
        source = ImageListSource(
            entries, ip.root_folder, int(ip.new_height), int(ip.new_width), bool(ip.is_color), bool(ip.shuffle)
        )
        self._setup(param, source, int(ip.batch_size), int(ip.rand_skip), prefetch=4)
