"""Binary protobuf files: .caffemodel, .solverstate, .binaryproto.

Reads parse the whole file at once (the upb runtime has no 64 MB message limit, so the 233 MB
CaffeNet parses as is).  Writes go to a temporary file in the same folder and are renamed into
place, so a reader or a crash never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from replicate.errors import ReplicateError
from replicate.io.blobs import array_to_blob, blob_to_array, set_float_data
from replicate.proto import caffe_pb2

M = TypeVar("M", bound=Message)

# Temporary files are `.tmp-` + mkstemp's 8 random characters + the final name.
_TMP, _TMP_RANDOM = ".tmp-", 8

# mkstemp makes 0600 files; a snapshot should get the permissions open() would give it.
_UMASK = os.umask(0)
os.umask(_UMASK)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def refuse_hdf5(path: str | os.PathLike[str], data: bytes) -> None:
    """Caffe's `snapshot_format: HDF5` writes .caffemodel.h5 and .solverstate.h5 files; parsed as
    protobuf they would fail with a message about wire types, so say what they are."""
    if data.startswith(_HDF5_SIGNATURE):
        raise ReplicateError(
            f"{path}: an HDF5 file (Caffe's snapshot_format: HDF5); only binary protobuf files "
            "(snapshot_format: BINARYPROTO) are read: save the net as a .caffemodel with pycaffe's Net.save"
        )


def read_binary(path: str | os.PathLike[str], message: M) -> M:
    """Parse the binary protobuf file at `path` into `message`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ReplicateError(f"{path}: cannot read ({err.strerror})") from None
    refuse_hdf5(path, data)
    try:
        message.ParseFromString(data)
    except DecodeError as err:
        kind = type(message).DESCRIPTOR.name
        raise ReplicateError(f"{path}: not a valid binary {kind} ({err})") from None
    return message


def file_digest(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in chunks (a CaffeNet snapshot is 244 MB): what a
    fine-tune records of its weights, and `results` compares with the file as it is now."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def prepare_output(path: str | os.PathLike[str], option: str) -> None:
    """Make sure a report `path` can be written once a long measurement ends: its folder is
    made, and a path that names a folder or runs through a file is a one-line error now rather
    than a traceback that loses the figures then (`option`: the flag that gave it)."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as err:
        raise ReplicateError(f"{option} {path}: cannot make its folder ({err.strerror})") from None
    if os.path.isdir(path):
        raise ReplicateError(f"{option} {path}: is a folder; name the file to write")


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temporary file and an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_TMP, suffix=os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_temporaries(folder: str | os.PathLike[str], name_start: str) -> list[str]:
    """Delete the temporary files `write_atomic` left in `folder` for files whose names start with
    `name_start` when its process was killed mid-write (each as big as the file it was writing:
    233 MB for a CaffeNet snapshot).  Only for a folder no other process is writing to.  Returns
    the names removed."""
    removed = []
    for entry in os.scandir(folder):
        if entry.name.startswith(_TMP) and entry.name[len(_TMP) + _TMP_RANDOM:].startswith(name_start):
            os.unlink(entry.path)
            removed.append(entry.name)
    return removed


def write_binary(path: str | os.PathLike[str], message: Message) -> None:
    write_atomic(path, message.SerializeToString())


def read_net_binary(path: str | os.PathLike[str]) -> caffe_pb2.NetParameter:
    """A .caffemodel as stored (V2 `layer` or V1 `layers`); see replicate.io.upgrade."""
    return read_binary(path, caffe_pb2.NetParameter())


def read_mean(path: str | os.PathLike[str]) -> np.ndarray:
    """A .binaryproto mean file as an array of its stored shape (usually 1 x C x H x W)."""
    try:
        return blob_to_array(read_binary(path, caffe_pb2.BlobProto()))
    except ValueError as err:
        raise ReplicateError(f"{path}: not a valid mean blob ({err})") from None


def write_mean(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a mean as Caffe's compute_image_mean does: legacy num/channels/height/width dims."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"a mean blob is 3-D or 4-D, not shape {array.shape}")
    blob = caffe_pb2.BlobProto()
    blob.num, blob.channels, blob.height, blob.width = (int(d) for d in array.shape)
    set_float_data(blob, array)
    write_binary(path, blob)


__all__ = [
    "array_to_blob",
    "blob_to_array",
    "read_binary",
    "read_mean",
    "read_net_binary",
    "write_atomic",
    "write_binary",
    "write_mean",
]
