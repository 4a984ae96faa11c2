"""Compile a Caffe NetParameter into a torch module that runs the layer DAG exactly as Caffe's Net.

Caffe wires layers by blob *name*: a top that reuses its bottom's name is computed in place, a
blob read by several layers is split (their gradients sum), a layer whose type ends in "Loss"
weighs its first top by 1, parameters named alike in `param { name: }` are one blob.  This module
reproduces those rules on top of autograd: every layer computes new tensors and the blob table is
rebound by name, so an "in-place" top never corrupts a value another layer still needs.  What
Caffe decides on the net its InsertSplits makes (which layers run backward, the net outputs, the
loss weights), and the nets its shared blob memory makes it compute otherwise, are
replicate.net.wiring's.  The wiring is written out once as a straight-line program (replicate.net.program); a pass feeds
the source layers' batches into it (`feed`), labels checked on the host on the way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from replicate.errors import ReplicateError
from replicate.io.upgrade import net_needs_upgrade, upgrade_net
from replicate.layers.base import Layer, Shape, layer_class, layer_error
from replicate.layers.labels import LabelRange
from replicate.net import wiring
from replicate.net.paths import resolve_layer_paths, written_paths
from replicate.net.program import build_program
from replicate.net.splits import insert_splits
from replicate.net.state import filter_net, make_state
from replicate.proto import caffe_pb2


@dataclass
class ForwardResult:
    """What one forward pass of a net yields."""

    #: Caffe's net outputs: blobs produced by some layer and read by no later layer.
    outputs: dict[str, torch.Tensor]
    #: Sum over loss tops of loss_weight * sum(top): the scalar Caffe's backward starts from.
    loss: torch.Tensor
    #: Every blob by name, holding its last value (an in-place top replaces its bottom).
    blobs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ParamEntry:
    """One learnable parameter in Caffe's `learnable_params` order, with its multipliers."""

    layer: str
    index: int
    param: nn.Parameter
    lr_mult: float
    decay_mult: float


@dataclass
class _Owner:
    """Bookkeeping of a learnable (owned) parameter while `param` specs of sharers are merged."""

    entry: ParamEntry
    has_lr: bool
    has_decay: bool


class CompiledNet(nn.Module):
    """A Caffe net for one phase/level/stages: layers built from the registry, every blob shaped.

    `forward(inputs)` feeds tensors into blobs produced by bottom-less layers (Input, Data) and
    runs every layer in prototxt order.  Parameters with lr_mult 0 do not require grad, so
    autograd skips the backward work Caffe's `param_propagate_down` skips.  `feed` and `program`
    are the two halves of a forward, for callers that compile the second (the solver).
    The file names in its layers (data sources, mean files) are read against `folder` (None: the
    working directory, as Caffe reads them); `to_proto` writes them as the net gave them.
    """

    def __init__(
        self,
        net_param: caffe_pb2.NetParameter,
        phase: int,
        stages: Iterable[str] = (),
        level: int = 0,
        folder: Path | None = None,
    ):
        super().__init__()
        if net_needs_upgrade(net_param):
            # V0/V1 layers, deprecated `input:` fields: Caffe's UpgradeNetAsNeeded.
            net_param = upgrade_net(net_param)
        self.net_name = net_param.name
        self.phase = phase
        self.state = make_state(net_param, phase, stages, level)
        self.force_backward = net_param.force_backward
        #: The layers as the net gives them, for `to_proto`; `layer_params` are what the layers
        #: were built from (file names resolved, completed by a layer as Caffe's BatchNorm does).
        self._written = filter_net(net_param, self.state)
        self.layer_params = [lp if folder is None else resolve_layer_paths(lp, folder) for lp in self._written]
        self.layers = nn.ModuleList()
        self.layer_names: list[str] = []
        self.blob_shapes: dict[str, Shape] = {}
        #: Per layer: its top blob names, anonymous "(automatic)" ones included.
        self.top_names: list[list[str]] = []
        #: Per layer, per top: the loss weight (0 = not a loss).
        self.loss_weights: list[list[float]] = []
        self._learnable: list[ParamEntry] = []
        self.register_buffer("_device_probe", torch.empty(0), persistent=False)

        owners: dict[str, _Owner] = {}
        #: Per blob name: the index of the layer whose top holds it now.
        producer: dict[str, int] = {}
        #: Per top of a source layer: the ranges of the layers that read it as labels.
        self.label_checks: dict[str, list[LabelRange]] = {}
        for lp in self.layer_params:
            bottom_shapes = []
            for j, b in enumerate(lp.bottom):
                if b not in self.blob_shapes:
                    raise ReplicateError(
                        f"layer '{lp.name}' ({lp.type}): unknown bottom blob '{b}' (bottom {j})"
                    )
                bottom_shapes.append(self.blob_shapes[b])
            if lp.name in self.layer_names:
                # Caffe tolerates this but then copies weights into only one of them.
                raise ReplicateError(f"layer name '{lp.name}' is used twice in net '{self.net_name}'")
            if lp.blobs:
                # Caffe's Layer starts from these values instead of its fillers; built here they
                # would be filled afresh, a silently different net.
                raise ReplicateError(
                    f"layer '{lp.name}' ({lp.type}): {len(lp.blobs)} blob(s) in the net definition are "
                    "not supported (Caffe would start from them); give weights as a .caffemodel (--weights)"
                )
            # Caffe's Net::Init gives the net's phase only to layers that name none: a layer's
            # own `phase` decides how it computes (Dropout, random crops, BatchNorm statistics).
            layer_phase = lp.phase if lp.HasField("phase") else phase
            kind = layer_class(lp)
            try:
                layer = kind(lp, layer_phase, bottom_shapes)
            except ReplicateError as err:
                # Layers name themselves in their own checks; a filler's or a transformer's error
                # would otherwise not say which of a net's layers it came from.
                raise layer_error(f"layer '{lp.name}' ({lp.type})", str(err)) from None
            self._route_label_check(lp, layer, producer)
            tops = list(lp.top)
            if layer.auto_top_blobs:
                # Caffe's anonymous tops: computed (a loss still counts) but nobody's input and
                # not a net output.
                tops += [f"(automatic) {lp.name}/{j}" for j in range(len(tops), len(layer.top_shapes))]
            if len(layer.top_shapes) != len(tops):
                raise layer.error(
                    f"produces {len(layer.top_shapes)} top blob(s) but the prototxt names {len(lp.top)}"
                )
            for j, (t, shape) in enumerate(zip(tops, layer.top_shapes)):
                in_place = j < len(lp.bottom) and lp.bottom[j] == t
                if t in self.blob_shapes and not in_place:
                    raise layer.error(f"top blob '{t}' is produced by multiple sources")
                self.blob_shapes[t] = tuple(shape)
                producer[t] = len(self.layers)
            self.top_names.append(tops)
            self.loss_weights.append(self._loss_weights(lp, layer, len(tops)))
            self._check_propagate_down(lp, layer)
            self._append_params(lp, layer, owners)
            self.layers.append(layer)
            self.layer_names.append(lp.name)
        #: Each layer's lr_mult per blob (1 where its param spec leaves it out), as Net::Init reads them.
        self.lr_mults = [
            [lp.param[k].lr_mult if k < len(lp.param) else 1.0 for k in range(len(layer.blobs))]
            for lp, layer in zip(self.layer_params, self.layers)
        ]
        allow = [
            [layer.allow_force_backward(j) for j in range(len(lp.bottom))]
            for lp, layer in zip(self.layer_params, self.layers)
        ]
        # Caffe decides the next three on the net its InsertSplits makes (replicate.net.splits).
        split = insert_splits(self.layer_params)
        wiring.check_in_place_after_split(self, split)
        wiring.check_in_place_on_shared_data(self)
        #: Caffe's decisions of which layers run backward and which bottoms get gradients; the
        #: forward pass cuts the graph wherever Caffe sends no gradient.
        self.backward_plan = wiring.split_backward_plan(self, split, allow)
        wiring.check_weighted_loss_readers(self)
        #: Caffe's `blob_loss_weights`: the loss weight of every blob that is a loss top (the
        #: "(* w = x loss)" a solver log prints beside a net output).
        self.blob_loss_weights = wiring.split_loss_weights(self, split)
        #: Caffe's net outputs: blobs no later layer reads, in Caffe's (std::set, sorted) order,
        #: which is the order of "Test net output #k" lines; each with the blob whose value it
        #: holds (a loss top that another layer reads is output as its Split's first top).
        self.output_blobs = wiring.split_outputs(split)
        self.output_names = list(self.output_blobs)
        self.input_layers = [i for i, lp in enumerate(self.layer_params) if not lp.bottom]
        self._programs: dict[bool, torch.fx.GraphModule] = {}

    # ----------------------------------------------------------------------------- construction
    @staticmethod
    def _loss_weights(lp: caffe_pb2.LayerParameter, layer: Layer, n: int) -> list[float]:
        if lp.loss_weight:
            if len(lp.loss_weight) != n:
                raise layer.error(
                    f"has {len(lp.loss_weight)} loss_weight value(s) for {n} top blob(s)"
                )
            return list(lp.loss_weight)
        # Caffe's LossLayer (every type named "...Loss") gives itself one loss weight, 1, which
        # Layer::SetLossWeights then CHECKs against the number of tops: a SoftmaxWithLoss with
        # a second top (prob) and no loss_weight aborts in Caffe.
        if layer.default_loss_weight and n > 1:
            raise layer.error(
                f"has {n} top blobs and no loss_weight: Caffe gives a loss layer one loss weight "
                "(loss_weight must be unspecified or specified once per top blob); give one per top"
            )
        return [layer.default_loss_weight if j == 0 else 0.0 for j in range(n)]

    def _route_label_check(self, lp: caffe_pb2.LayerParameter, layer: Layer, producer: dict[str, int]) -> None:
        """Labels fed by a source layer are checked on the host as each batch arrives (`feed`);
        labels some other layer computes, by the reading layer in its forward."""
        if layer.label_bottom is None:
            return
        blob = lp.bottom[layer.label_bottom]
        if not self.layer_params[producer[blob]].bottom:
            self.label_checks.setdefault(blob, []).append(layer.label_range())
        else:
            layer.checks_labels = blob

    @staticmethod
    def _check_propagate_down(lp: caffe_pb2.LayerParameter, layer: Layer) -> None:
        n = len(lp.bottom)
        if lp.propagate_down and len(lp.propagate_down) != n:
            raise layer.error(
                f"has {len(lp.propagate_down)} propagate_down value(s) for {n} bottom blob(s)"
            )

    def _append_params(
        self, lp: caffe_pb2.LayerParameter, layer: Layer, owners: dict[str, _Owner]
    ) -> None:
        """Caffe's `Net::AppendParam`: the first layer naming a param owns it; later ones share
        the owner's blob (same shape, or same count with PERMISSIVE), merging lr/decay mults.
        More `param` specs than blobs Caffe refuses ("Too many params specified"): the extra
        multipliers would apply to nothing."""
        if len(lp.param) > len(layer.blobs):
            raise layer.error(f"has {len(lp.param)} param specs for {len(layer.blobs)} parameter blob(s)")
        for k in range(len(layer.blobs)):
            spec = lp.param[k] if k < len(lp.param) else caffe_pb2.ParamSpec()
            name = spec.name
            if not name or name not in owners:
                param = layer.blobs[k]
                entry = ParamEntry(lp.name, k, param, spec.lr_mult, spec.decay_mult)
                self._learnable.append(entry)
                if name:
                    owners[name] = _Owner(entry, spec.HasField("lr_mult"), spec.HasField("decay_mult"))
                param.requires_grad_(spec.lr_mult != 0)
                continue
            owner = owners[name]
            mine, theirs = layer.blobs[k], owner.entry.param
            if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
                if mine.numel() != theirs.numel():
                    raise layer.error(
                        f"cannot share param '{name}' owned by layer '{owner.entry.layer}': count "
                        f"mismatch, owner shape {tuple(theirs.shape)}, this {tuple(mine.shape)}"
                    )
                if mine.shape != theirs.shape:
                    raise layer.error(
                        f"sharing param '{name}' with a different shape {tuple(mine.shape)} than "
                        f"the owner's {tuple(theirs.shape)} is not supported"
                    )
            elif mine.shape != theirs.shape:
                raise layer.error(
                    f"cannot share param '{name}' owned by layer '{owner.entry.layer}': shape "
                    f"mismatch, owner shape {tuple(theirs.shape)}, this {tuple(mine.shape)}"
                )
            if spec.HasField("lr_mult"):
                if owner.has_lr and spec.lr_mult != owner.entry.lr_mult:
                    raise layer.error(f"shared param '{name}' has mismatched lr_mult")
                owner.has_lr = True
                owner.entry.lr_mult = spec.lr_mult
                theirs.requires_grad_(spec.lr_mult != 0)
            if spec.HasField("decay_mult"):
                if owner.has_decay and spec.decay_mult != owner.entry.decay_mult:
                    raise layer.error(f"shared param '{name}' has mismatched decay_mult")
                owner.has_decay = True
                owner.entry.decay_mult = spec.decay_mult
            layer.blobs[k] = theirs

    def check_trainable(self) -> None:
        """Stop where Caffe's first Backward of this net aborts: a gradient asked of a bottom the
        layer cannot send one to (an Accuracy with a loss_weight under a learned layer, a loss
        layer's label with propagate_down: true).  Here that gradient would silently be none.
        Stop too where Caffe trains a loss layer whose top another layer reads with that layer's
        gradient in place of its own loss weight (tests/golden/caffe/loss_reader_default), and
        where its layers send a gradient that `propagate_down: false` says they do not
        (tests/golden/caffe/memory_ignored_propagate_down)."""
        plan = self.backward_plan
        wiring.check_in_place_chains(self)
        wiring.check_loss_reader_gradients(self)
        wiring.check_ignored_propagate_down(self)
        for i, (lp, layer) in enumerate(zip(self.layer_params, self.layers)):
            if not plan.layer_needs[i]:
                continue
            for j, need in enumerate(plan.bottom_needs[i]):
                why = layer.backward_refusal(j) if need else None
                if why:
                    raise layer.error(
                        f"{why}, but the net's backward needs a gradient for bottom {j} '{lp.bottom[j]}' "
                        "(its loss_weight, propagate_down or force_backward); Caffe's Backward aborts"
                    )

    # ----------------------------------------------------------------------------------- access
    def to_proto(self) -> caffe_pb2.NetParameter:
        """The net as Caffe's Net::ToProto writes it into a .caffemodel, blobs aside: its name and
        its layers as Net::Init holds them, that is the layers as given (file names too) after
        InsertSplits's Split layers, each with the net's phase unless it names its own, a loss
        layer with its default loss weight where it names none (LossLayer::LayerSetUp), and what
        a layer completes in its own parameters (BatchNorm's lr_mult 0 specs)."""
        defaults = {lp.name: layer.default_loss_weight for lp, layer in zip(self.layer_params, self.layers)}
        layers = insert_splits([written_paths(lp, given) for lp, given in zip(self.layer_params, self._written)]).layers
        for lp in layers:
            if not lp.HasField("phase"):
                lp.phase = self.state.phase
            if not lp.loss_weight and defaults.get(lp.name) and lp.type != "Split":
                lp.loss_weight.append(defaults[lp.name])
        return caffe_pb2.NetParameter(name=self.net_name, layer=layers)

    def learnable_params(self) -> list[ParamEntry]:
        """Caffe's `learnable_params`: owned parameters in layer order, shared ones once."""
        return list(self._learnable)

    def layer_blobs(self) -> dict[str, list[nn.Parameter]]:
        """Every layer's parameter blobs by layer name (shared blobs appear under each user)."""
        return {name: list(layer.blobs) for name, layer in zip(self.layer_names, self.layers)}

    def share_trained_layers_with(self, source: CompiledNet) -> None:
        """Caffe's `Net::ShareTrainedLayersWith`: for every layer of `source` that this net has
        (by name), use the very same parameter blobs, as a solver's test nets do with its train
        net; blob counts and shapes must agree."""
        replaced: dict[int, nn.Parameter] = {}
        for name, src in zip(source.layer_names, source.layers):
            if name not in self.layer_names:
                continue
            target = self.layer(name)
            if len(target.blobs) != len(src.blobs):
                raise target.error(
                    f"has {len(target.blobs)} parameter blob(s), the net sharing with it has {len(src.blobs)}"
                )
            for k, (mine, theirs) in enumerate(zip(target.blobs, src.blobs)):
                if mine.shape != theirs.shape:
                    raise target.error(
                        f"cannot share blob {k}: shape {tuple(mine.shape)} here, {tuple(theirs.shape)} in the source net"
                    )
                replaced[id(mine)] = theirs
                target.blobs[k] = theirs
        for entry in self._learnable:
            entry.param = replaced.get(id(entry.param), entry.param)

    def layer(self, name: str) -> Layer:
        """The layer called `name` (names may hold characters module attributes cannot)."""
        try:
            return self.layers[self.layer_names.index(name)]
        except ValueError:
            raise ReplicateError(f"net '{self.net_name}' has no layer '{name}'") from None

    def use_space_to_depth(self) -> list[str]:
        """Run every convolution that fits (few input channels, a stride: CaffeNet's conv1) as a
        stride-1 convolution over blocks of pixels (replicate.layers.convolution); their names."""
        names = []
        for name, layer in zip(self.layer_names, self.layers):
            if layer.type == "Convolution" and layer.space_to_depth_fits():
                layer.space_to_depth = True
                names.append(name)
        return names

    @property
    def device(self) -> torch.device:
        return self._device_probe.device

    # ---------------------------------------------------------------------------------- running
    @property
    def program(self) -> torch.fx.GraphModule:
        """The layers as one straight-line program: `program(feed) -> (loss or None, outputs)`."""
        return self._program(every_blob=False)

    def _program(self, every_blob: bool) -> torch.fx.GraphModule:
        # Held in a dict, not as submodules: the program calls this net's own layers.
        if every_blob not in self._programs:
            self._programs[every_blob] = build_program(
                self, self.layer_params, self.top_names, self.loss_weights, self.backward_plan.bottom_needs,
                self.output_blobs, every_blob,
            )
        return self._programs[every_blob]

    def feed(self, inputs: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Every source layer's tops for one pass, on this net's device: `inputs` where given, the
        layer's next batch otherwise (a fully fed layer is not run: a Data layer reads nothing).
        Labels are checked here, on the host; a label fed on the device is copied back for that
        (a sync), so feed labels on the host."""
        inputs = dict(inputs or {})
        source_tops = {t for i in self.input_layers for t in self.top_names[i]}
        unknown = sorted(set(inputs) - source_tops)
        if unknown:
            raise ReplicateError(
                f"net '{self.net_name}': inputs {unknown} are not blobs of an input/data layer; "
                f"those are {sorted(source_tops)}"
            )
        device = self.device
        fed: dict[str, torch.Tensor] = {}
        for i in self.input_layers:
            given = [inputs.get(t) for t in self.top_names[i]]
            made = self.layers[i]() if any(t is None for t in given) else given
            for name, value in zip(self.top_names[i], (m if g is None else g for g, m in zip(given, made))):
                self._check_fed_shape(name, value)
                self.check_labels(name, value)
                fed[name] = value if value.device == device else value.to(device, non_blocking=True)
        return fed

    def check_labels(self, name: str, value: torch.Tensor) -> None:
        """Stop on a label out of the range of any layer that reads source blob `name` as labels
        (Caffe CHECKs them in the reading layer's Forward); a host tensor needs no sync."""
        for label_range in self.label_checks.get(name, ()):
            label_range.check(value, name)

    def _check_fed_shape(self, name: str, value: torch.Tensor) -> None:
        """Every layer was built for the blob shapes worked out at compile time (a global pooling's
        kernel, a Crop's offsets, an InnerProduct's fan-in); Caffe reshapes each layer for a new
        input shape, a compiled net does not, so another image size would run a silently different
        net.  Another batch size (axis 0) every layer follows."""
        built = self.blob_shapes[name]
        if value.dim() != len(built) or tuple(value.shape[1:]) != built[1:]:
            raise ReplicateError(
                f"net '{self.net_name}': input '{name}' has shape {tuple(value.shape)}, the net was "
                f"compiled for {built}; only the batch size (axis 0) may differ: compile the net for "
                "that shape (the Input layer's shape, the data layer's crop_size)"
            )

    def forward(self, inputs: Mapping[str, torch.Tensor] | None = None) -> ForwardResult:
        loss, outputs, blobs = self._program(every_blob=True)(self.feed(inputs))
        if loss is None:
            loss = torch.zeros((), device=self.device)
        return ForwardResult(outputs, loss, blobs)
