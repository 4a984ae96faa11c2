"""Prototxt text: read with errors that point at file, line and column; write in Caffe's style."""

from __future__ import annotations

import os
import re
from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2

M = TypeVar("M", bound=Message)

_POSITION = re.compile(r"^(\d+):(\d+) : (.*)$", re.S)


def parse_text(text: str, message: M, source: str = "<string>") -> M:
    """Merge prototxt `text` into `message`; a syntax or schema error names source:line:col."""
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as err:
        found = _POSITION.match(str(err))
        if found:
            line, col, what = found.groups()
            raise ReplicateError(f"{source}:{line}:{col}: {what.strip()}") from None
        raise ReplicateError(f"{source}: {err}") from None
    return message


def read_text(path: str | os.PathLike[str], message: M) -> M:
    """Parse the prototxt file at `path` into `message` (which it returns)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ReplicateError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ReplicateError(f"{path}: not a text prototxt (not UTF-8)") from None
    return parse_text(text, message, str(path))


def format_text(message: Message) -> str:
    """Caffe-style text: two-space indent, enums by name, floats in their shortest exact form."""
    return text_format.MessageToString(message)


def write_text(path: str | os.PathLike[str], message: Message) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(format_text(message))


def read_net_text(path: str | os.PathLike[str]) -> caffe_pb2.NetParameter:
    """A net prototxt as written, not upgraded (see replicate.io.upgrade for that)."""
    return read_text(path, caffe_pb2.NetParameter())


def read_solver_text(path: str | os.PathLike[str]) -> caffe_pb2.SolverParameter:
    """A solver prototxt as written, not upgraded."""
    return read_text(path, caffe_pb2.SolverParameter())
