"""BlobProto <-> numpy, with Caffe's rules for legacy 4-D dimensions.

Writing a blob's values element by element (`data.extend(array.tolist())`) costs seconds per ten
million floats, which would stall training for half a minute at every CaffeNet snapshot.  Instead
the values are handed to the protobuf parser as the packed field they are on the wire (tag, length,
little-endian float32 bytes): the message holds the same values, so it serializes to the same
bytes, and the parser copies them in C.
"""

from __future__ import annotations

import numpy as np

from replicate.proto import caffe_pb2


LEGACY_DIMS = ("num", "channels", "height", "width")


def is_legacy(blob: caffe_pb2.BlobProto) -> bool:
    """Whether the blob gives its shape as legacy (num, channels, height, width): any of them set."""
    return any(blob.HasField(f) for f in LEGACY_DIMS)


def blob_shape(blob: caffe_pb2.BlobProto) -> tuple[int, ...]:
    """The blob's shape by Caffe's `Blob::FromProto` rule: legacy (num, channels, height, width)
    when any of those is set, else `shape.dim`, which may be empty.

    Legacy files always describe four axes, so a 1-D bias of 96 reads as (1, 1, 1, 96); weight
    copying compares such shapes by element count as Caffe's `ShapeEquals` does.  A zero-axis blob
    (a scalar Scale or Bias, `num_axes: 0`) is written by Caffe's `ToProto` with no `shape` and no
    legacy dims at all, so the absence of `shape` must not mean legacy: that read such a blob as
    (0, 0, 0, 0) and refused its one value (the scale_axes golden case of real Caffe).
    """
    if is_legacy(blob):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(int(d) for d in blob.shape.dim)


def blob_to_array(blob: caffe_pb2.BlobProto) -> np.ndarray:
    """The blob's data as float32 (double_data is narrowed, as Caffe's float nets do)."""
    shape = blob_shape(blob)
    if len(blob.double_data):
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        values = np.asarray(blob.data, dtype=np.float32)
    expected = int(np.prod(shape)) if shape else 1
    if values.size != expected:
        raise ValueError(f"blob holds {values.size} values but its shape {shape} needs {expected}")
    return values.reshape(shape)


def array_to_blob(array: np.ndarray, blob: caffe_pb2.BlobProto | None = None) -> caffe_pb2.BlobProto:
    """Write `array` into `blob` (a new one by default) in the current `shape` form, float32."""
    blob = caffe_pb2.BlobProto() if blob is None else blob
    blob.Clear()
    # The shape before np.ascontiguousarray, which makes a zero-axis array 1-D.  Caffe's ToProto
    # writes a zero-axis blob with no `shape` at all (an empty extend would still set it), which
    # reads back as a scalar.
    if np.ndim(array):
        blob.shape.dim.extend(int(d) for d in np.shape(array))
    array = np.ascontiguousarray(array, dtype=np.float32)
    set_float_data(blob, array)
    return blob


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


#: BlobProto.data is field 5, packed: wire type 2 (length-delimited).
_DATA_TAG = bytes([(5 << 3) | 2])


def set_float_data(blob: caffe_pb2.BlobProto, array: np.ndarray) -> None:
    """Append `array`'s values (as float32, C order) to `blob.data`, fast (see the module doc)."""
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    if raw:
        blob.MergeFromString(_DATA_TAG + _varint(len(raw)) + raw)
