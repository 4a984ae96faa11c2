"""The layers of a CaffeNet training step trace into one graph: `torch.compile(fullgraph=True)`
accepts each of them (a graph break raises) and the compiled layer gives eager's values and
gradients.  The cheap "aot_eager" backend runs the traced forward and backward graphs with
PyTorch's own kernels, so this checks tracing, not a code generator.
"""

from __future__ import annotations

import pytest
import torch

from replicate.io.prototxt import parse_text
from replicate.layers.base import layer_class
from replicate.proto import caffe_pb2

pytestmark = pytest.mark.compiled

TRAIN = caffe_pb2.TRAIN
GAUSS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'
# (LayerParameter body, bottom shapes, classes of an integer-label bottom 1 or None)
CASES = {
    "conv_group": (f"type: 'Convolution' convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 group: 2 {GAUSS} }}",
                   [(2, 4, 6, 6)], None),
    "conv_1x1_strided": ("type: 'Convolution' convolution_param { num_output: 4 kernel_size: 1 stride: 2 pad: 1 "
                         "bias_term: false weight_filler { type: 'gaussian' std: 0.5 } }", [(2, 3, 6, 8)], None),
    "relu": ("type: 'ReLU'", [(2, 3, 4, 4)], None),
    "pool_max_ceil": ("type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 }", [(2, 3, 6, 6)], None),
    "pool_ave_pad": ("type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }", [(2, 3, 8, 8)], None),
    "pool_padded_path": ("type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 2 }", [(2, 3, 5, 5)], None),
    "lrn_across": ("type: 'LRN' lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 }", [(2, 7, 3, 3)], None),
    "lrn_within": ("type: 'LRN' lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }",
                   [(2, 3, 4, 4)], None),
    "inner_product": (f"type: 'InnerProduct' inner_product_param {{ num_output: 5 {GAUSS} }}", [(2, 3, 2, 2)], None),
    "softmax_loss": ("type: 'SoftmaxWithLoss'", [(4, 5), (4,)], 5),
    "softmax_loss_ignore_prob": ("type: 'SoftmaxWithLoss' top: 't1' loss_param { ignore_label: 1 }",
                                 [(2, 3, 4), (2, 4)], 3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_engine_layer_compiles_to_one_graph_with_eager_results(name: str) -> None:
    text, shapes, classes = CASES[name]
    param = parse_text(f'name: "l" top: "t0" {text}', caffe_pb2.LayerParameter(), "<t>")
    torch.manual_seed(0)
    layer = layer_class(param)(param, TRAIN, shapes).double()
    gen = torch.Generator().manual_seed(1)
    bottoms = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    if classes is not None:
        bottoms[1] = torch.randint(0, classes, shapes[1], generator=gen).double()
    weights = [torch.randn(s, generator=gen, dtype=torch.float64) for s in layer.top_shapes]

    def run(fn) -> list[torch.Tensor]:
        xs = [b.clone().requires_grad_(b.is_floating_point() and j == 0) for j, b in enumerate(bottoms)]
        params = list(layer.blobs)
        for p in params:
            p.grad = None
        tops = fn(*xs)
        # Only the first top of a loss layer carries gradient (Caffe sends none through prob).
        total = sum((t * w).sum() for t, w in zip(tops[:1], weights))
        total.backward()
        return [t.detach() for t in tops] + [xs[0].grad] + [p.grad for p in params]

    eager = run(layer)
    torch._dynamo.reset()
    compiled = run(torch.compile(layer, backend="aot_eager", fullgraph=True))
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e, rtol=1e-12, atol=1e-14)
