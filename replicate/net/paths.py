"""The file names in a net's layers: data sources, mean files, image root folders.

Caffe opens them against the directory it was started in; a run here reads them against a
folder (the solver's, or the model file's for `test`), which is the same thing for the usual
`cd run && caffe train -solver solver.prototxt` and lets a run be started from anywhere.  The
layers are built from resolved copies, while a snapshot writes the names as the net gave them,
as Caffe's Net::ToProto does: a .caffemodel then does not depend on where its run lived.
"""

from __future__ import annotations

from pathlib import Path

from replicate.proto import caffe_pb2

#: (sub-message, field) of every file name a layer opens.
PATH_FIELDS = (
    ("data_param", "source"),
    ("image_data_param", "source"),
    ("image_data_param", "root_folder"),
    ("transform_param", "mean_file"),
)


def absolute(path: str, base: Path) -> str:
    """`path` against `base` unless absolute; a trailing slash is kept (Caffe's ImageData joins
    root_folder and file names as plain strings)."""
    if not path or Path(path).is_absolute():
        return path
    joined = str(base / path)
    return joined + "/" if path.endswith("/") else joined


def resolve_layer_paths(layer: caffe_pb2.LayerParameter, base: Path) -> caffe_pb2.LayerParameter:
    """A copy of `layer` with its file names made absolute against `base`."""
    out = caffe_pb2.LayerParameter()
    out.CopyFrom(layer)
    for message, name in PATH_FIELDS:
        if out.HasField(message) and getattr(getattr(out, message), name):
            sub = getattr(out, message)
            setattr(sub, name, absolute(getattr(sub, name), base))
    return out


def written_paths(layer: caffe_pb2.LayerParameter, written: caffe_pb2.LayerParameter) -> caffe_pb2.LayerParameter:
    """A copy of `layer` (resolved, and maybe completed by its layer as Caffe's BatchNorm does) with
    the file names of `written`, the same layer as the net gave it."""
    out = caffe_pb2.LayerParameter()
    out.CopyFrom(layer)
    for message, name in PATH_FIELDS:
        if out.HasField(message):
            sub, given = getattr(out, message), getattr(written, message)
            if given.HasField(name):
                setattr(sub, name, getattr(given, name))
            else:
                sub.ClearField(name)
    return out
