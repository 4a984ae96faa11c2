"""Rendering: a NetSpec plus an architecture and a solver config become checked Caffe messages.

The Jinja templates (`prototxt_templates/`) hold the structure of CaffeNet and of the solver;
architectures (`prototxt_templates/arch/*.json`) and solver configs (`solver_configs/*.json`)
hold the numbers.  Everything is rendered in memory and parsed back into Caffe's schema before a
caller writes anything, so a malformed template, architecture or config is a one-line
ReplicateError and never a half-written run directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import posixpath
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from google.protobuf import text_encoding
from google.protobuf.descriptor import FieldDescriptor

from replicate.checkout import PROJECT_DIR, in_checkout
from replicate.errors import ReplicateError
from replicate.io.prototxt import parse_text
from replicate.proto import caffe_pb2
from replicate.treatments import WEIGHT_LAYERS, NetSpec

#: Templates and solver configs live in the checkout, beside the package (replicate.checkout).
TEMPLATE_DIR = PROJECT_DIR / "prototxt_templates"
ARCH_DIR = TEMPLATE_DIR / "arch"
SOLVER_CONFIG_DIR = PROJECT_DIR / "solver_configs"
NET_TEMPLATE = "caffenet.prototxt.j2"
SOLVER_TEMPLATE = "solver.prototxt.j2"
VIEWS = ("train", "val", "single")

_INT, _NUM = "int", "number"
# Per part of the architecture: field -> (kind, required).
_CONV = {"num_output": (_INT, True), "kernel_size": (_INT, True), "pad": (_INT, False),
         "stride": (_INT, False), "group": (_INT, False), "std": (_NUM, True),
         "bias": (_NUM, True)}
_POOL = {"kernel_size": (_INT, True), "stride": (_INT, True)}
_LRN = {"local_size": (_INT, True), "alpha": (_NUM, True), "beta": (_NUM, True)}
_DROP = {"dropout_ratio": (_NUM, True)}
_FC = {"num_output": (_INT, True), "std": (_NUM, True), "bias": (_NUM, True)}
_INPUT = {"channels": (_INT, True), "stored_size": (_INT, True), "crop_size": (_INT, True),
          "train_batch": (_INT, True), "val_batch": (_INT, True), "scale": (_NUM, False)}
ARCH_PARTS: dict[str, dict[str, tuple[str, bool]]] = {
    "input": _INPUT, "conv1": _CONV, "pool1": _POOL, "norm1": _LRN, "conv2": _CONV,
    "pool2": _POOL, "norm2": _LRN, "conv3": _CONV, "conv4": _CONV, "conv5": _CONV,
    "pool5": _POOL, "fc6": _FC, "drop6": _DROP, "fc7": _FC, "drop7": _DROP, "fc8": _FC,
}
# Solver fields the generator owns: the net files it writes next to the solver.
_NET_FIELDS = {"net", "net_param", "train_net", "test_net", "train_net_param", "test_net_param",
               "train_state", "test_state"}


@dataclass(frozen=True)
class Arch:
    """A named architecture parameter set (sizes, fillers, input); fc8 may await --num-output."""

    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class SolverConfig:
    """Solver fields in order, as (field, prototxt literal); max_iter and prefix name snapshots."""

    name: str
    fields: tuple[tuple[str, str], ...]
    max_iter: int
    snapshot_prefix: str

    def final_caffemodel(self) -> str:
        """What Caffe writes after the last iteration: `<prefix>_iter_<max_iter>.caffemodel`."""
        return f"{self.snapshot_prefix}_iter_{self.max_iter}.caffemodel"


@dataclass(frozen=True)
class DataPaths:
    train_source: str
    val_source: str
    mean_file: str
    backend: str = "LMDB"


def pb_literal(value: Any) -> str:
    """A Python value as a prototxt literal (strings quoted and C-escaped like Caffe's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ReplicateError(f"value {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return '"' + text_encoding.CEscape(value, as_utf8=True) + '"'
    raise ReplicateError(f"value {value!r} cannot be written into a prototxt")


def _named_file(name_or_path: str, directory: Path, what: str) -> tuple[str, Path]:
    """NAME = a file shipped in `directory`; anything with a separator or suffix is a path."""
    if os.sep in name_or_path or "/" in name_or_path or name_or_path.endswith(".json"):
        return name_or_path, Path(name_or_path)
    path = directory / f"{name_or_path}.json"
    if not in_checkout(path).is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.json")))
        raise ReplicateError(f"unknown {what} {name_or_path!r} (known: {known}; or give a path)")
    return name_or_path, path


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; unreadable or malformed is a one-line ReplicateError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ReplicateError(f"{path}: cannot read ({err.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReplicateError(f"{path}: not valid JSON ({err})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ReplicateError(f"{path}: expected a JSON object")
    return data


def _check_kind(where: str, value: Any, kind: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _INT:
        ok = ok and isinstance(value, int)
    if not ok:
        raise ReplicateError(f"{where}: expected {'an integer' if kind == _INT else 'a number'},"
                             f" got {value!r}")


def load_arch(name_or_path: str) -> Arch:
    """Read and check an architecture: every part present, every field of the right kind."""
    name, path = _named_file(name_or_path, ARCH_DIR, "architecture")
    data = read_json(path)
    data.pop("doc", None)
    if not isinstance(data.get("net_name"), str):
        raise ReplicateError(f"{path}: net_name must be a string")
    extra = set(data) - set(ARCH_PARTS) - {"net_name"}
    if extra:
        raise ReplicateError(f"{path}: unknown part(s) {', '.join(sorted(extra))}")
    for part, fields in ARCH_PARTS.items():
        spec = data.get(part)
        if not isinstance(spec, dict):
            raise ReplicateError(f"{path}: part {part!r} missing or not an object")
        unknown = set(spec) - set(fields)
        if unknown:
            raise ReplicateError(f"{path}: {part}: unknown field(s) {', '.join(sorted(unknown))}")
        for field, (kind, required) in fields.items():
            if field not in spec:
                if required:
                    raise ReplicateError(f"{path}: {part}.{field} is required")
                continue
            if part == "fc8" and field == "num_output" and spec[field] is None:
                continue  # this architecture takes its class count from --num-output
            _check_kind(f"{path}: {part}.{field}", spec[field], kind)
    return Arch(name, data)


def with_num_output(arch: Arch, num_output: int | None) -> Arch:
    """The architecture with fc8's width set (the class count, or the paper's 1000)."""
    if num_output is None:
        if arch.params["fc8"]["num_output"] is None:
            raise ReplicateError(f"architecture {arch.name} needs --num-output "
                                 "(the dataset's class count)")
        return arch
    if num_output < 1:
        raise ReplicateError(f"--num-output must be positive, got {num_output}")
    params = dict(arch.params, fc8=dict(arch.params["fc8"], num_output=num_output))
    return Arch(arch.name, params)


def _conv_out(size: int, kernel: int, pad: int, stride: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _pool_out(size: int, kernel: int, pad: int, stride: int) -> int:
    # Caffe rounds pooled sizes up, then drops a last window that would start in the padding.
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def arch_shapes(arch: Arch) -> dict[str, tuple[int, ...]]:
    """Caffe's top shape (C, H, W) or (C,) of every layer for one crop; raises if any is invalid.

    Catches what Caffe would reject at net set-up: a window larger than its input, a group that
    does not divide the channels, an empty output.
    """
    p = arch.params
    inp = p["input"]
    if inp["crop_size"] > inp["stored_size"]:
        raise ReplicateError(f"architecture {arch.name}: crop {inp['crop_size']} larger than "
                             f"the stored {inp['stored_size']}")
    c, s = inp["channels"], inp["crop_size"]
    shapes: dict[str, tuple[int, ...]] = {"data": (c, s, s)}
    for part in ("conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4",
                 "conv5", "pool5"):
        spec = p[part]
        if part.startswith("conv"):
            group = spec.get("group", 1)
            if c % group or spec["num_output"] % group:
                raise ReplicateError(f"architecture {arch.name}: {part} group {group} does not "
                                     f"divide {c} input / {spec['num_output']} output channels")
            s = _conv_out(s, spec["kernel_size"], spec.get("pad", 0), spec.get("stride", 1))
            c = spec["num_output"]
        elif part.startswith("pool"):
            s = _pool_out(s, spec["kernel_size"], 0, spec["stride"])
        if s < 1:
            raise ReplicateError(f"architecture {arch.name}: {part} output is empty")
        shapes[part] = (c, s, s)
    for part in ("fc6", "fc7", "fc8"):
        shapes[part] = (p[part]["num_output"],)
    return shapes


_FD = FieldDescriptor
_PYTHON_KINDS: dict[int, tuple[tuple[type, ...], str]] = {
    _FD.CPPTYPE_FLOAT: ((int, float), "a number"), _FD.CPPTYPE_DOUBLE: ((int, float), "a number"),
    _FD.CPPTYPE_INT32: ((int,), "an integer"), _FD.CPPTYPE_INT64: ((int,), "an integer"),
    _FD.CPPTYPE_UINT32: ((int,), "an integer"), _FD.CPPTYPE_UINT64: ((int,), "an integer"),
    _FD.CPPTYPE_BOOL: ((bool,), "true or false"), _FD.CPPTYPE_STRING: ((str,), "a string"),
}


def _check_field_value(where: str, fd: FieldDescriptor, value: Any) -> None:
    kinds, words = _PYTHON_KINDS[fd.cpp_type]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ReplicateError(f"{where}: expected {words}, got {value!r}")


def load_solver_config(name_or_path: str, for_base: bool = False) -> SolverConfig:
    """Read a solver config: {"doc": ..., "solver": {field: value}} checked against Caffe's schema.

    The net files are the generator's; max_iter and snapshot_prefix are required because
    dependent nets name the base net's final snapshot, which must therefore exist.  An optional
    "base" object replaces solver fields for the nets trained from scratch that the others start
    from or are compared with (`for_base`), e.g. to train those longer where a budget cannot give
    every net a schedule long enough for the bases to converge before anything copies them, as the
    paper's had (the report then says the schedules differ).
    """
    name, path = _named_file(name_or_path, SOLVER_CONFIG_DIR, "solver config")
    config = read_json(path)
    solver, base = config.get("solver"), config.get("base", {})
    if not isinstance(solver, dict):
        raise ReplicateError(f"{path}: expected a \"solver\" object of SolverParameter fields")
    if not isinstance(base, dict):
        raise ReplicateError(f"{path}: expected \"base\" to be an object of SolverParameter fields")
    if for_base:
        solver, name = {**solver, **base}, f"{name} (base nets)"
    by_name = caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name
    fields: list[tuple[str, str]] = []
    for key, value in solver.items():
        where = f"{path}: {'base' if for_base and key in base else 'solver'}.{key}"
        if key in _NET_FIELDS:
            raise ReplicateError(f"{where}: the net files are set by the generator")
        if key not in by_name:
            raise ReplicateError(f"{where}: not a SolverParameter field")
        fd = by_name[key]
        if fd.message_type is not None:
            raise ReplicateError(f"{where}: message fields are not supported in a solver config")
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and fd.label != FieldDescriptor.LABEL_REPEATED:
            raise ReplicateError(f"{where}: takes one value, not a list")
        for v in values:
            if fd.enum_type is not None:
                if v not in fd.enum_type.values_by_name:
                    known = ", ".join(fd.enum_type.values_by_name)
                    raise ReplicateError(f"{where}: {v!r} is not one of {known}")
                fields.append((key, v))
            else:
                _check_field_value(where, fd, v)
                fields.append((key, pb_literal(v)))
    message = parse_text("\n".join(f"{k}: {v}" for k, v in fields),
                         caffe_pb2.SolverParameter(), str(path))
    for required in ("max_iter", "snapshot_prefix"):
        if not message.HasField(required):
            raise ReplicateError(f"{path}: solver.{required} is required")
    if not message.snapshot_after_train:
        raise ReplicateError(f"{path}: snapshot_after_train false leaves no final snapshot "
                             "for the nets that copy this one")
    if message.max_iter < 1:
        raise ReplicateError(f"{path}: solver.max_iter must be positive")
    return SolverConfig(name, tuple(fields), message.max_iter, message.snapshot_prefix)


def net_seed(seed: int, net_name: str) -> int:
    """The random_seed of one net of a grid whose solver config fixes `seed`.

    The authors' solvers set no random_seed, so Caffe seeded each of their nets from the clock:
    every net was its own random draw.  A config that fixes a seed (for repeatable runs) gives
    each net its own seed from it and the net's name; one seed shared by all would start a
    transfer net's new layers from the very draws its base net started from, and make the nets
    of a treatment copies of one draw rather than independent samples."""
    return (seed + zlib.crc32(net_name.encode())) % 2**31


def with_net_seed(config: SolverConfig, net_name: str) -> SolverConfig:
    """`config` with its random_seed (if it sets one) replaced by the net's own (`net_seed`)."""
    fields = tuple((k, str(net_seed(int(v), net_name)) if k == "random_seed" else v)
                   for k, v in config.fields)
    return dataclasses.replace(config, fields=fields)


def layer_learning(spec: NetSpec) -> dict[str, dict[str, Any]]:
    """Per weight layer: its name (`-new` above n where weights are copied) and multipliers.

    Learning layers: weights lr 1 decay 1, biases lr 2 decay 0 (the originals); frozen: all 0.
    """
    out = {}
    for key in WEIGHT_LAYERS:
        frozen = key in spec.frozen
        out[key] = {
            "name": f"{key}-new" if key in spec.renamed else key,
            "lr_w": 0 if frozen else 1, "decay_w": 0 if frozen else 1,
            "lr_b": 0 if frozen else 2, "decay_b": 0,
        }
    return out


def data_paths(spec: NetSpec, root: str) -> DataPaths:
    """`data prepare`'s layout: the source is the set's view `<root>/<set>` (the Data layer reads
    a view folder as it reads an LMDB); the mean is the training set's (see NetSpec)."""
    return DataPaths(
        train_source=posixpath.join(root, spec.train_set),
        val_source=posixpath.join(root, spec.val_set),
        mean_file=posixpath.join(root, spec.mean_set, "mean.binaryproto"),
    )


class Templates:
    """The Jinja environment over one template directory (the shipped one unless told)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else in_checkout(TEMPLATE_DIR)
        if not self.directory.is_dir():
            raise ReplicateError(f"{self.directory}: template directory not found")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.directory)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        self.env.filters["pb"] = pb_literal

    def _render(self, name: str, context: dict[str, Any]) -> str:
        where = self.directory / name
        try:
            return self.env.get_template(name).render(**context)
        except jinja2.TemplateNotFound:
            raise ReplicateError(f"{where}: template not found") from None
        except jinja2.TemplateSyntaxError as err:
            raise ReplicateError(f"{err.filename or where}:{err.lineno}: {err.message}") from None
        except jinja2.TemplateError as err:
            raise ReplicateError(f"{where}: {err}".replace("\n", " ")) from None
        except OSError as err:
            raise ReplicateError(f"{where}: cannot read ({err.strerror})") from None

    def net(self, spec: NetSpec, arch: Arch, data: DataPaths, view: str,
            val_loss: bool = False) -> caffe_pb2.NetParameter:
        """One view of the net: "train", "val" or "single" (both, with include rules)."""
        if view not in VIEWS:
            raise ValueError(f"view {view!r} not in {VIEWS}")
        text = self._render(NET_TEMPLATE, {
            "view": view, "arch": arch.params, "L": layer_learning(spec), "data": data,
            "val_loss": val_loss,
        })
        return parse_text(text, caffe_pb2.NetParameter(),
                          f"{self.directory / NET_TEMPLATE} (rendered {view} view of {spec.name})")

    def solver(self, config: SolverConfig, files: dict[str, str]) -> caffe_pb2.SolverParameter:
        """The solver for net files `files` ({"train", "val"} or {"net"}, relative paths)."""
        text = self._render(SOLVER_TEMPLATE, {
            "net_file": files.get("net"), "train_file": files.get("train"),
            "val_file": files.get("val"), "solver_fields": config.fields,
        })
        return parse_text(text, caffe_pb2.SolverParameter(),
                          f"{self.directory / SOLVER_TEMPLATE} (rendered with {config.name})")
