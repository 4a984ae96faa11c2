"""Caffe's NetState filtering: which layers of a NetParameter exist in a given phase/level/stages.

Mirrors `Net::FilterNet` and `Net::StateMeetsRule` so that one prototxt holding TRAIN and TEST
layers (as every net of the paper does) yields exactly the layers Caffe would build.
"""

from __future__ import annotations

from collections.abc import Iterable

from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2


def state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """True when every condition the rule sets (phase, level bounds, stages) holds in `state`."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def layer_included(state: caffe_pb2.NetState, layer: caffe_pb2.LayerParameter) -> bool:
    """Caffe's rule: with include rules, any met rule includes; else any met exclude rule drops."""
    if layer.include and layer.exclude:
        raise ReplicateError(
            f"layer '{layer.name}': specify either include or exclude rules, not both"
        )
    if layer.include:
        return any(state_meets_rule(state, r) for r in layer.include)
    return not any(state_meets_rule(state, r) for r in layer.exclude)


def make_state(
    net_param: caffe_pb2.NetParameter, phase: int, stages: Iterable[str] = (), level: int = 0
) -> caffe_pb2.NetState:
    """The state Caffe's `Net(param, phase, level, stages)` builds: the prototxt's own stages kept,
    the caller's added, phase and level set by the caller."""
    state = caffe_pb2.NetState()
    state.CopyFrom(net_param.state)
    state.phase = phase
    state.level = level
    state.stage.extend(stages)
    return state


def filter_net(
    net_param: caffe_pb2.NetParameter, state: caffe_pb2.NetState
) -> list[caffe_pb2.LayerParameter]:
    """Copies of the layers of `net_param` that exist in `state`, in prototxt order (copies:
    layers may complete their own parameter specs, as Caffe's BatchNorm does)."""
    kept = []
    for layer in net_param.layer:
        if layer_included(state, layer):
            copy = caffe_pb2.LayerParameter()
            copy.CopyFrom(layer)
            kept.append(copy)
    return kept
