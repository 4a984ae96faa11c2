"""A net's forward pass written out once as a straight-line torch.fx program.

Caffe's Net wires its layers by blob name, and that wiring is fixed when the net is built.  So
instead of walking the layer list and a name-to-blob table on every pass, the walk is done once,
here: one call per layer with each bottom bound to the value that last took that blob name, a
`detach` wherever Caffe sends no gradient, and the loss as loss_weight * sum(top) added up in
prototxt order.  The result is an ordinary `GraphModule` with no Python control flow: run eagerly
it is the reference forward, and torch.compile sees it as one graph.

Source layers (Data, ImageData, Input) are not in the program.  Their tops are its input (a dict
by blob name), so batches are made, and their labels checked, on the host before it runs.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence

from torch import fx, nn

from replicate.proto import caffe_pb2


def build_program(
    root: nn.Module,
    layer_params: Sequence[caffe_pb2.LayerParameter],
    top_names: Sequence[Sequence[str]],
    loss_weights: Sequence[Sequence[float]],
    bottom_needs: Sequence[Sequence[bool]],
    outputs: Mapping[str, str],
    every_blob: bool,
) -> fx.GraphModule:
    """`program(inputs) -> (loss, outputs)` (and every blob by name when `every_blob`).

    `root.layers[i]` is the layer of `layer_params[i]`; `inputs` maps every top of a bottom-less
    layer to its value.  `loss` is None for a net without loss; its `outputs` map the names of
    `outputs` (in that order) to the values of the blobs they name.  The program calls `root`'s
    layer modules themselves, so it sees their parameters as they are (moved, shared, loaded)
    whenever it runs.
    """
    graph = fx.Graph()
    inputs = graph.placeholder("inputs")
    blobs: dict[str, fx.Node] = {}
    loss: fx.Node | None = None
    for i, lp in enumerate(layer_params):
        if not lp.bottom:
            tops = [graph.call_function(operator.getitem, (inputs, t)) for t in top_names[i]]
        else:
            bottoms = tuple(
                blobs[b] if down else graph.call_method("detach", (blobs[b],))
                for b, down in zip(lp.bottom, bottom_needs[i])
            )
            call = graph.call_module(f"layers.{i}", bottoms)
            tops = [graph.call_function(operator.getitem, (call, j)) for j in range(len(top_names[i]))]
        for name, node, weight in zip(top_names[i], tops, loss_weights[i]):
            blobs[name] = node
            if weight:
                term = graph.call_function(operator.mul, (graph.call_method("sum", (node,)), weight))
                loss = term if loss is None else graph.call_function(operator.add, (loss, term))
    result: tuple = (loss, {name: blobs[blob] for name, blob in outputs.items()})
    if every_blob:
        result += (dict(blobs),)
    graph.output(result)
    return fx.GraphModule(root, graph, class_name="NetProgram")
