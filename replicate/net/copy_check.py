"""Whether a load of trained weights filled the net as meant, and what to say about it.

Caffe's `CopyTrainedLayersFrom` copies by layer name and is silent about the net's layers that no
source layer matched: they keep their fillers.  For a transfer net that silence is dangerous: an
empty file, a base with renamed layers or another net's snapshot leaves its frozen layers random,
and AnB quietly becomes the paper's random-frozen treatment under AnB's name.  So every load here
says how many of the net's learnable layers it filled and which it did not, and refuses two loads
that cannot be what was meant:

- a file that supplies no learnable layer of the net;
- a layer nothing else will fill that no file supplies: in training a frozen layer (every
  lr_mult 0), in a test or a resume every learnable layer.

`--allow-missing-layers NAME,...` (or `all`) accepts such a load knowingly; the log and the run's
metrics say so.  No torch here: the grid checks base snapshots with `supplied_layers` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2

if TYPE_CHECKING:
    from replicate.net.compile import CompiledNet

OPTION = "--allow-missing-layers"
ALL = "all"
#: Why a layer that no file supplies cannot be left to its fillers, per kind of load.
WHY_REQUIRED = {
    "train": "frozen, every lr_mult 0: left at random fillers for the whole run",
    "test": "a test would score random fillers",
    "resume": "a snapshot of this net holds every learnable layer: the net has changed since it was written",
}


def parse_allowed(text: str | None) -> frozenset[str]:
    """`--allow-missing-layers` as a set of layer names ({"all"} for every layer; empty: not given)."""
    if text is None:
        return frozenset()
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise ReplicateError(f"{OPTION} {text!r}: give layer names separated by commas, or {ALL}")
    return frozenset(names)


def learnable_layers(net: CompiledNet) -> list[str]:
    """The net's layers that hold weights (Caffe's learnable layers, frozen ones included), in order."""
    return [name for name, layer in zip(net.layer_names, net.layers) if len(layer.blobs)]


def frozen_layers(net: CompiledNet) -> list[str]:
    """Layers whose every blob has lr_mult 0, so that training never changes them; BatchNorm in
    training is not one (its forward accumulates its statistics itself)."""
    return [name for name, layer in zip(net.layer_names, net.layers)
            if len(layer.blobs) and not layer.writes_blobs and not any(b.requires_grad for b in layer.blobs)]


def supplied_layers(source: caffe_pb2.NetParameter) -> list[str]:
    """The layers a caffemodel supplies weights for: those with at least one blob, by name."""
    return [layer.name for layer in source.layer if len(layer.blobs)]


def _names(names: Iterable[str], limit: int = 12) -> str:
    """`a, b, c` (the first `limit` and how many more): a one-line error stays readable."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass
class WeightsLoad:
    """One load of weights into a net (`--weights` files, or a snapshot resumed): which of the
    net's learnable `layers` the files filled, checked against the `required` ones and the
    layers `allowed` to be missing.  `kind` is train, test or resume (see WHY_REQUIRED)."""

    layers: list[str]
    required: list[str]
    allowed: frozenset[str] = frozenset()
    kind: str = "train"
    files: list[str] = field(default_factory=list)
    copied: set[str] = field(default_factory=set)
    #: Files that supplied no layer of the net (only when accepted knowingly).
    empty: list[str] = field(default_factory=list)
    #: The sha256 of each file in `files`, where the caller took it (a fine-tune's `--weights`:
    #: `results` then knows a base snapshot replaced since, by a base trained again).
    digests: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = sorted(self.allowed - set(self.layers) - {ALL})
        if unknown:
            raise ReplicateError(f"{OPTION} names {_names(unknown)}, not a learnable layer of the net "
                                 f"(its learnable layers: {_names(self.layers)})")

    def _allows(self, names: Iterable[str]) -> bool:
        return ALL in self.allowed or set(names) <= self.allowed

    def add(self, path: str, copied: Sequence[str], source: caffe_pb2.NetParameter, digest: str | None = None) -> None:
        """Record what copy_trained_layers copied from `path` (whose sha256 is `digest`); a file
        that supplies none of the net's learnable layers stops the run, unless every one of them
        is allowed to be missing."""
        self.files.append(str(path))
        self.digests.append(digest)
        mine = set(self.layers)
        supplied = [name for name in copied if name in mine]
        self.copied.update(supplied)
        if supplied or not self.layers:
            return
        if not self._allows(self.layers):
            held = supplied_layers(source)
            holds = (f"its layers with weights are {_names(held)}" if held
                     else "it holds no layer with weights")
            raise ReplicateError(
                f"weights file {path} supplies none of the net's {len(self.layers)} learnable layers "
                f"({_names(self.layers)}): {holds}; check the file, or add {OPTION} {ALL} to start them "
                "from their fillers knowingly")
        self.empty.append(str(path))

    def finish(self) -> None:
        """After the last file: stop when a required layer was supplied by none, unless allowed."""
        missing = [name for name in self.required if name not in self.copied]
        if missing and not self._allows(missing):
            files = (f"weights file {self.files[0]} does" if len(self.files) == 1
                     else f"weights files {', '.join(self.files)} do")
            layer = "layer" if len(missing) == 1 else "layers"
            raise ReplicateError(
                f"{files} not supply the net's {layer} "
                f"{_names(missing)} ({WHY_REQUIRED[self.kind]}); give a file that holds "
                f"{'it' if len(missing) == 1 else 'them'}, or add {OPTION} {','.join(missing)} to accept "
                "that knowingly")

    @property
    def not_copied(self) -> list[str]:
        return [name for name in self.layers if name not in self.copied]

    @property
    def accepted(self) -> list[str]:
        """The missing layers that stopped no run only because they were allowed."""
        refused = set(self.layers) if self.empty else set(self.required)
        return [name for name in self.not_copied if name in refused]

    def lines(self) -> list[str]:
        """What the log says: how many learnable layers were filled, which were not, and what
        was accepted knowingly."""
        verb = "Restored" if self.kind == "resume" else "Copied"
        files = ", ".join(self.files)
        total, left = len(self.layers), self.not_copied
        if not left:
            lines = [f"{verb} all {total} learnable layers of the net from {files}"]
        else:
            filled = [name for name in self.layers if name in self.copied]
            copied = f" ({_names(filled, total)})" if filled else ""
            lines = [f"{verb} {len(filled)} of the net's {total} learnable layers from {files}{copied}; "
                     f"not copied, left at their fillers: {_names(left, total)}"]
        for path in self.empty:
            lines.append(f"{OPTION}: accepted knowingly that {path} supplies no layer of the net")
        required = [name for name in self.accepted if name in self.required]
        if required:
            lines.append(f"{OPTION}: accepted knowingly that {_names(required, total)} "
                         f"{'is' if len(required) == 1 else 'are'} not copied ({WHY_REQUIRED[self.kind]})")
        return lines

    def record(self) -> dict[str, Any]:
        """The same for metrics.jsonl's first record (`weights`)."""
        return {"files": self.files, "resumed": self.kind == "resume", "layers": len(self.layers),
                "copied": [name for name in self.layers if name in self.copied],
                "not_copied": self.not_copied, "accepted": self.accepted, "empty_files": self.empty,
                **({"sha256": self.digests} if any(self.digests) else {})}
