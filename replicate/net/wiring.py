"""Caffe's rules on how a net is wired, decided on the net its InsertSplits makes and on how its
blobs share memory (replicate.net.splits): which layers run backward, what the net outputs and
how its losses weigh; and the nets that Caffe refuses or computes otherwise than they say, which
a CompiledNet refuses too (tests/golden/caffe: backward_plan_readers, solver_sgd_split_readers,
loss_reader_*, memory_*, refused_*; tools/caffe_fuzz.py).

The engine computes each net without Splits and with a value per blob (autograd sums a shared
blob's gradients); these rules make it decide as Caffe decides, or stop where Caffe's own memory
sharing would make it compute another net.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from replicate.layers.base import Layer
from replicate.net.need_backward import BackwardPlan, backward_plan
from replicate.net.splits import SplitNet
from replicate.proto import caffe_pb2


class Wired(Protocol):
    """What these rules read of a net being compiled (a CompiledNet): its layers in order, their
    tops and loss weights, force_backward, and (once made) the backward plan."""

    layer_params: list[caffe_pb2.LayerParameter]
    layers: Sequence[Layer]
    top_names: list[list[str]]
    loss_weights: list[list[float]]
    force_backward: bool
    backward_plan: BackwardPlan
    blob_shapes: dict[str, tuple[int, ...]]
    lr_mults: list[list[float]]

#: Layer types whose tops are their bottom's data in Caffe (Blob::ShareData).
SHARES_DATA = frozenset({"Split", "Flatten"})
#: Layer types whose Caffe backward reads their own output.
READS_OUTPUT_IN_BACKWARD = frozenset({"Sigmoid", "TanH", "Softmax", "LRN"})
#: In-place layers after a ReLU on the same data that leave its backward's mask right: each keeps
#: the sign of every value, or zeroes a value together with its gradient.
KEEPS_RELU_SIGN = frozenset({"ReLU", "TanH", "Dropout"})


#: Layer types whose Caffe Backward writes the bottom's gradient whatever `propagate_down` says
#: (a Flatten's bottom takes its top's diff), and LRN where its region is ACROSS_CHANNELS.
IGNORES_PROPAGATE_DOWN = frozenset({"Softmax", "LRN", "BatchNorm", "Flatten"})


def check_ignored_propagate_down(net: Wired) -> None:
    """Stop where Caffe sends a gradient that `propagate_down: false` says it does not.  Net::Init
    runs a layer's Backward when a bottom blob needs one, whatever its flags, and the Backward of
    Softmax, LRN (ACROSS_CHANNELS), BatchNorm and Flatten never reads them; Scale, computing its
    scale's gradient, keeps the product top_diff x bottom in bottom 0's diff (unless in place or
    as large as its scale).  Where the layer that made that bottom runs Backward too (in Caffe's
    split net: another reader of the blob needs a gradient), it reads that diff as its gradient.
    Here the flag cuts the gradient, as the net says."""
    plan = net.backward_plan
    for i, lp in enumerate(net.layer_params):
        if not plan.layer_needs[i] or not lp.propagate_down:
            continue
        for j, b in enumerate(lp.bottom):
            if lp.propagate_down[j] or plan.bottom_needs[i][j] or not plan.bottom_diff_read[i][j]:
                continue
            if lp.type in IGNORES_PROPAGATE_DOWN and not (
                    lp.type == "LRN" and lp.lrn_param.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL):
                raise net.layers[i].error(
                    f"has propagate_down: false on bottom '{b}', which Caffe's {lp.type} ignores: its Backward "
                    "writes that bottom's gradient anyway" + (" (its bottom takes its top's diff)" if lp.type == "Flatten"
                                                              else "") + ", so Caffe trains the layers below with it; "
                    "remove the flag, or cut the gradient at a layer that honours it")
            if lp.type == "Scale" and j == 0 and _scale_keeps_product(net, i):
                raise net.layers[i].error(
                    f"has propagate_down: false on bottom '{b}', but Caffe's Scale, computing its scale's gradient, "
                    "leaves the product top_diff x bottom in that bottom's diff, which the layers below read as "
                    "their gradient; remove the flag, or freeze the scale (lr_mult: 0)")


def _scale_keeps_product(net: Wired, i: int) -> bool:
    """Whether Caffe's Scale i computes its scale's gradient into bottom 0's diff: the scale gets
    a gradient (a learned one with lr_mult not 0, or a second bottom that propagates down), and
    the layer is not in place and its scale has fewer values than bottom 0."""
    lp, layer = net.layer_params[i], net.layers[i]
    if len(lp.bottom) == 2:
        scale_learns = net.backward_plan.bottom_needs[i][1]
        scale_size = math.prod(net.blob_shapes[lp.bottom[1]])
    else:
        scale_learns = net.lr_mults[i][0] != 0
        scale_size = layer.blobs[0].numel()
    in_place = lp.top[0] == lp.bottom[0]
    return scale_learns and not in_place and scale_size != math.prod(net.blob_shapes[lp.bottom[0]])


def check_in_place_after_split(net: Wired, split: SplitNet) -> None:
    """Caffe's Net::AppendTop on the split net: a layer computing in place on a blob that other
    layers read too reads its own Split top instead, so its top is a second blob of that name,
    and Caffe aborts ("Top blob 'X' produced by multiple sources").  Here it would run, its
    earlier readers seeing the value before it."""
    produced: set[str] = set()
    for lp, i in zip(split.layers, split.origin):
        for j, top in enumerate(lp.top):
            in_place = j < len(lp.bottom) and lp.bottom[j] == top
            if top in produced and not in_place and i is not None:
                raise net.layers[i].error(
                    f"computes top '{top}' in place, but other layers read '{top}' too, so Caffe's "
                    f"InsertSplits gives this layer a Split top of its own to read and its top '{top}' "
                    "is a second blob of that name: Caffe aborts (Top blob produced by multiple "
                    "sources); give the top another name")
            produced.add(top)


def _memory(net: Wired) -> tuple[list[int | None], list[set[str]], dict[int, int]]:
    """Caffe's blob memory: per layer, the memory its top 0 writes when computed in place (None
    otherwise) and the blob names bound to that memory then; and the layer that made each
    memory.  Split and Flatten tops share their bottom's data (Blob::ShareData); an in-place
    top is its bottom's memory."""
    memory: dict[str, int] = {}
    names: dict[int, set[str]] = {}
    made_by: dict[int, int] = {}
    writes: list[int | None] = []
    bound: list[set[str]] = []
    for i, lp in enumerate(net.layer_params):
        write = memory[lp.bottom[0]] if lp.bottom and lp.top and lp.bottom[0] == lp.top[0] else None
        writes.append(write)
        bound.append(set(names[write]) if write is not None else set())
        for j, top in enumerate(lp.top):
            if j < len(lp.bottom) and lp.bottom[j] == top:
                continue
            shared = lp.type in SHARES_DATA and lp.bottom
            memory[top] = memory[lp.bottom[0]] if shared else len(names)
            names.setdefault(memory[top], set()).add(top)
            made_by.setdefault(memory[top], i)
    return writes, bound, made_by


def check_in_place_on_shared_data(net: Wired) -> None:
    """Stop where Caffe computes in place on data another blob shares by then: an explicit
    Split's or a Flatten's tops are their bottom's memory, so a layer computing in place on
    one of them changes the others in Caffe, for their readers and for the backward of the
    layers that made them.  Here each blob keeps its own value."""
    for i, names in enumerate(_memory(net)[1]):
        lp = net.layer_params[i]
        others = sorted(names - set(lp.top[:1]))
        if others:
            raise net.layers[i].error(
                f"computes '{lp.top[0]}' in place, whose data Caffe shares with {', '.join(repr(o) for o in others)} "
                f"(a Split's or a Flatten's tops are their bottom's data): in Caffe it would change those "
                "too; give its top another name")


def check_in_place_chains(net: Wired) -> None:
    """Stop where Caffe's backward of a layer reads its output after a later layer, computing in
    place on the same data, has overwritten it: Sigmoid, TanH,
    Softmax, LRN and Eltwise PROD read their own output (which a later plain ReLU only zeroes,
    with its gradient), ReLU the sign of it (which a later ReLU, TanH or Dropout keeps or
    zeroes with its gradient, and others change)."""
    writes, _, made_by = _memory(net)
    plan = net.backward_plan
    chain = {m: [i] for m, i in made_by.items()}  # the layers that wrote each memory so far
    for i, m in enumerate(writes):
        if m is None:
            continue
        lp = net.layer_params[i]
        zeroes_only = lp.type == "ReLU" and lp.relu_param.negative_slope == 0
        for k in chain.get(m, []):
            earlier = net.layer_params[k]
            reads_output = earlier.type in READS_OUTPUT_IN_BACKWARD or (
                earlier.type == "Eltwise" and earlier.eltwise_param.operation == caffe_pb2.EltwiseParameter.PROD)
            sign_changed = earlier.type == "ReLU" and lp.type not in KEEPS_RELU_SIGN
            if plan.layer_needs[k] and ((reads_output and not zeroes_only) or sign_changed):
                raise net.layers[k].error(
                    f"its backward in Caffe reads its output '{earlier.top[0]}', which layer '{lp.name}' "
                    f"({lp.type}), computing in place on it later, has overwritten by then: Caffe's gradient "
                    "here is not this net's; give the later layer's top another name")
        chain.setdefault(m, []).append(i)


def _split_weights(net: Wired, split: SplitNet) -> list[list[float]]:
    """Each layer of the split net's loss weight per top, as Caffe's layers hold them: a Split's
    first top takes the weight split off its bottom, whose layer keeps none (a loss layer then
    has 1 again: refused, _check_weighted_loss_readers)."""
    weights = []
    for lp, i in zip(split.layers, split.origin):
        if i is None:
            weights.append([lp.loss_weight[0] if lp.loss_weight and j == 0 else 0.0 for j in range(len(lp.top))])
        elif net.layer_params[i].loss_weight and not lp.loss_weight:
            weights.append([0.0] * len(net.top_names[i]))
        else:
            weights.append(net.loss_weights[i])
    return weights


def split_loss_weights(net: Wired, split: SplitNet) -> dict[str, float]:
    tops = [list(lp.top) if i is None else net.top_names[i] for lp, i in zip(split.layers, split.origin)]
    return {t: w for names, ws in zip(tops, _split_weights(net, split)) for t, w in zip(names, ws) if w}


def split_outputs(split: SplitNet) -> dict[str, str]:
    """Net::Init's available blobs, each with the blob of ours that holds its value."""
    available: set[str] = set()
    source: dict[str, str] = {}
    for lp, i in zip(split.layers, split.origin):
        available.difference_update(lp.bottom)
        available.update(lp.top)
        if i is None:
            source.update((t, lp.bottom[0]) for t in lp.top)
    return {name: source.get(name, name) for name in sorted(available)}


def split_backward_plan(net: Wired, split: SplitNet, allow: list[list[bool]]) -> BackwardPlan:
    """Caffe's backward plan, made as Caffe makes it: on the net InsertSplits gives, where each
    reader of a blob read by several has a Split top of its own, then read back for our layers.
    Made on the unsplit net, a reader that sends no gradient (an Accuracy in the train net, a
    Silence, `propagate_down: false`) cut the blob for its other readers too, and every layer
    below it silently got no gradient."""
    tops = [list(lp.top) if i is None else net.top_names[i] for lp, i in zip(split.layers, split.origin)]
    mults = [[] if i is None else net.lr_mults[i] for i in split.origin]
    allows = [[True] if i is None else allow[i] for i in split.origin]
    plan = backward_plan(split.layers, tops, _split_weights(net, split), mults, allows, net.force_backward)
    at = [c for c, i in enumerate(split.origin) if i is not None]
    # A layer that does not run backward sends no gradient, whatever its bottoms' flags say
    # (Caffe keeps `propagate_down: true` there, and its Backward never reads it).
    bottom_needs = [[need and plan.layer_needs[c] for need in plan.bottom_needs[c]] for c in at]
    gets_diff = {t: False for names in net.top_names for t in names}
    for lp, needs in zip(net.layer_params, bottom_needs):
        for b, need in zip(lp.bottom, needs):
            gets_diff[b] = gets_diff[b] or need
    return BackwardPlan([plan.layer_needs[c] for c in at], bottom_needs, gets_diff,
                        [plan.bottom_diff_read[c] for c in at])


def _loss_readers(net: Wired) -> list[tuple[int, int, int, int]]:
    """(loss layer, its top, reader, the reader's bottom) for every layer that reads a loss
    top of a Caffe LossLayer (a layer type with a default loss weight)."""
    producer: dict[str, tuple[int, int]] = {}
    found = []
    for i, lp in enumerate(net.layer_params):
        for j, b in enumerate(lp.bottom):
            p, t = producer[b]
            if net.layers[p].default_loss_weight and net.loss_weights[p][t]:
                found.append((p, t, i, j))
        for t, name in enumerate(lp.top):
            producer[name] = (i, t)
    return found


def _refuse_loss_reader(net: Wired, p: int, t: int, i: int, what: str) -> None:
    loss, reader = net.layer_params[p], net.layer_params[i]
    raise net.layers[p].error(
        f"its loss top '{loss.top[t]}' is read by layer '{reader.name}' ({reader.type}), and {what} "
        "(tests/golden/caffe/loss_reader_*); not supported: read the loss layer's bottoms instead"
    )


def check_weighted_loss_readers(net: Wired) -> None:
    """Stop where Caffe's net computes another loss than the net's: a loss layer with a
    loss_weight whose top another layer reads.  Caffe's InsertSplits moves that weight to a
    Split and clears the layer's own, which LossLayer::LayerSetUp sets to 1 again: Caffe's
    logged and test losses count the loss (1 + w) times, then 2w times once a backward has
    written its diff, and its net outputs name the Split's top."""
    for p, t, i, _ in _loss_readers(net):
        if net.layer_params[p].loss_weight:
            _refuse_loss_reader(net, p, t, i, "it has a loss_weight: Caffe's InsertSplits moves that weight to "
                                "a Split and LossLayer gives the layer 1 again, so Caffe's logged and "
                                "test losses count it (1 + w) times, later 2w times")


def check_loss_reader_gradients(net: Wired) -> None:
    """Stop where Caffe trains a loss layer whose top another layer reads with that layer's
    gradient in place of its own loss weight (tests/golden/caffe/loss_reader_default)."""
    for p, t, i, j in _loss_readers(net):
        if net.backward_plan.bottom_needs[i][j]:
            _refuse_loss_reader(net, p, t, i, "in Caffe the reader's backward writes that top's gradient over the "
                                "loss layer's own loss weight (InsertSplits adds no Split for a default "
                                "loss weight), so Caffe trains the loss layer with the reader's gradient alone")
