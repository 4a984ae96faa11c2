"""The base class and the registry of Caffe layer types.

A layer is built from its `LayerParameter`, the phase and the shapes of its bottoms, the way
Caffe's `LayerSetUp` + `Reshape` run: it checks its parameters, creates and fills its parameter
blobs, and records the shapes of its tops, so that a whole net can be shaped before any data
flows.  `forward` maps bottom tensors to top tensors; autograd provides the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from replicate.errors import ReplicateError
from replicate.layers.labels import LabelRange
from replicate.proto import caffe_pb2

Shape = tuple[int, ...]


class Layer(nn.Module):
    """One Caffe layer.

    Subclasses set `top_shapes` in `__init__` and append their parameter blobs to `blobs` in
    Caffe's order (weights, then bias), already filled by Caffe's fillers.
    """

    #: Loss layers weigh their first top by 1 unless the prototxt says otherwise (Caffe's rule
    #: for types ending in "Loss").
    default_loss_weight: float = 0.0
    #: Caffe's `AutoTopBlobs`: a layer declaring more `top_shapes` than the prototxt names tops
    #: (a 2014 loss layer with no top) gets anonymous tops the net does not list as outputs.
    auto_top_blobs: bool = False
    #: Bottom counts Caffe accepts (`ExactNumBottomBlobs`, `MinBottomBlobs`, ...): None = any.
    min_bottoms: int | None = None
    max_bottoms: int | None = None
    #: The bottom that holds integer class labels (see `label_range`), if any.
    label_bottom: int | None = None
    #: Whether forward writes the layer's own blobs (BatchNorm's running statistics in training),
    #: which keeps a net from being differentiated as a pure function of its parameters.
    writes_blobs: bool = False

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__()
        self.name = param.name
        self.type = param.type
        self.phase = phase
        self.blobs = nn.ParameterList()
        self.top_shapes: list[Shape] = []
        #: The label blob's name, set by the net when that blob is computed by another layer rather
        #: than fed by a data or input layer: the host-side check of each batch cannot see those
        #: labels, so the forward checks them itself (a sync on a GPU).
        self.checks_labels: str | None = None
        n = len(bottom_shapes)
        if (self.min_bottoms is not None and n < self.min_bottoms) or (
            self.max_bottoms is not None and n > self.max_bottoms
        ):
            want = (
                f"{self.min_bottoms}" if self.min_bottoms == self.max_bottoms
                else f"{self.min_bottoms or 0}..{self.max_bottoms if self.max_bottoms is not None else 'n'}"
            )
            raise self.error(f"takes {want} bottom blob(s), got {n}")

    def allow_force_backward(self, bottom_index: int) -> bool:
        """Caffe's `AllowForceBackward`: loss layers refuse it for their label bottom."""
        return True

    def backward_refusal(self, bottom_index: int) -> str | None:
        """Why Caffe's Backward aborts when asked for this bottom's gradient, or None: it computes
        one.  A bottom that refuses force_backward (a loss layer's labels) refuses it too."""
        return None if self.allow_force_backward(bottom_index) else "cannot backpropagate to its labels"

    def label_range(self) -> LabelRange | None:
        """The labels this layer accepts in its `label_bottom` (Caffe CHECKs them in Forward)."""
        return None

    @property
    def where(self) -> str:
        """How errors name this layer: `layer 'NAME' (TYPE)`."""
        return f"layer '{self.name}' ({self.type})"

    def error(self, message: str) -> ReplicateError:
        """An error that names this layer, for bad parameters found while building it."""
        return layer_error(self.where, message)

    def forward(self, *bottoms: torch.Tensor) -> tuple[torch.Tensor, ...]:  # pragma: no cover
        raise NotImplementedError


def layer_error(where: str, message: str) -> ReplicateError:
    """`message` prefixed with the layer's `where`, unless it names the layer already (a data
    layer's transformer is given `where`, and its errors pass through here again)."""
    return ReplicateError(message if message.startswith(f"{where}: ") else f"{where}: {message}")


_REGISTRY: dict[str, type[Layer]] = {}


def register(type_name: str) -> Callable[[type[Layer]], type[Layer]]:
    """Class decorator: make `cls` the implementation of prototxt `type: "<type_name>"`."""

    def add(cls: type[Layer]) -> type[Layer]:
        if type_name in _REGISTRY:
            raise RuntimeError(f"layer type {type_name!r} registered twice")
        _REGISTRY[type_name] = cls
        return cls

    return add


def registered_types() -> list[str]:
    import replicate.layers  # noqa: F401  (fills the registry)

    return sorted(_REGISTRY)


def layer_class(param: caffe_pb2.LayerParameter) -> type[Layer]:
    """The class for `param.type`; an unknown type stops with the layer and the known types."""
    known = registered_types()
    try:
        return _REGISTRY[param.type]
    except KeyError:
        raise ReplicateError(
            f"layer '{param.name}' has unknown type '{param.type}'; supported types: {', '.join(known)}"
        ) from None
