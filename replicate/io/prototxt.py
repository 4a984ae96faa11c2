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
_UNKNOWN_FIELD = re.compile(r'has no field named "(\w+)"')
# The tokens that decide nesting: strings and comments (skipped), names, and braces.
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*|[A-Za-z_][\w.]*|[{}<>]')


def parse_text(text: str, message: M, source: str = "<string>") -> M:
    """Parse prototxt `text` into `message` (cleared first); a syntax or schema error names
    source:line:col.

    As Caffe's ReadProtoFromTextFile (TextFormat::Parse, not Merge), a non-repeated field given
    twice is an error: `num_output: 96 ... num_output: 256` in one block, or two
    `convolution_param` blocks, stop here instead of the last one silently winning."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        found = _POSITION.match(str(err))
        if found:
            line, col, what = found.groups()
            hint = _missing_brace_hint(text, message, int(line), int(col), what)
            what = what.strip()
            if hint:
                what = f"{what.rstrip('.')}; {hint}"
            raise ReplicateError(f"{source}:{line}:{col}: {what}") from None
        raise ReplicateError(f"{source}: {err}") from None
    return message


def _open_blocks(text: str, line: int, col: int) -> list[tuple[str, int]]:
    """The message fields still open (name, line) at 1-based `line`:`col` of `text`."""
    lines = text.split("\n")[:line]
    lines[-1] = lines[-1][: col - 1]
    head = "\n".join(lines)
    stack: list[tuple[str, int]] = []
    previous = ""
    for match in _TOKEN.finditer(head):
        token = match.group()
        if token in "{<":
            stack.append((previous, head.count("\n", 0, match.start()) + 1))
        elif token in "}>":
            if stack:
                stack.pop()
        elif token[0] not in "\"'#":
            previous = token
    return stack


def _missing_brace_hint(text: str, message: Message, line: int, col: int, what: str) -> str:
    """When an unknown field is one of an enclosing message, the likely cause: a `}` missing
    above, so the next field of the outer message was read inside the inner one."""
    unknown = _UNKNOWN_FIELD.search(what)
    if unknown is None:
        return ""
    field = unknown.group(1)
    levels = [message.DESCRIPTOR]
    blocks = _open_blocks(text, line, col)
    for name, _ in blocks:
        known = levels[-1].fields_by_name.get(name)
        if known is None or known.message_type is None:
            return ""
        levels.append(known.message_type)
    for depth in range(len(levels) - 2, -1, -1):
        if field in levels[depth].fields_by_name:
            unclosed = blocks[depth:]
            where = ", ".join(f"{name} (opened at line {at})" for name, at in unclosed)
            outer = f"the enclosing {blocks[depth - 1][0]}" if depth else "the top level"
            braces = "a `}` is" if len(unclosed) == 1 else f"{len(unclosed)} `}}`s are"
            return f'"{field}" is a field of {outer}, so {braces} probably missing above, closing {where}'
    return ""


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
