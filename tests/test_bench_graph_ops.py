"""Our compiled iteration runs the same heavy operators as the compiled plain-PyTorch peer.

On the GPU the step's time is its convolutions and GEMMs (issue 20, docs/gpu.md "Measured so far"): a
layer change that adds one, or that computes conv1's gradient with respect to the images (which
nothing reads), would slow every net with no test failing.  The graphs are AOTAutograd's, as the
compiler backend receives them, captured on the CPU at batch 1 in fp32 (in bf16 the same holds,
with 38 casts against the peer's 43: `python -m replicate.bench.graph_ops --precision bf16`).
"""

from __future__ import annotations

import pytest

from replicate.bench.graph_ops import operators, ours, peer

pytestmark = pytest.mark.compiled  # torch.compile's tracing

HEAVY = ("convolution.default", "convolution_backward.default", "mm.default", "addmm.default",
         "max_pool2d_with_indices.default", "max_pool2d_with_indices_backward.default")


def _input_gradients(graphs) -> list[bool]:
    """For each convolution backward, in graph order: is the gradient of its input computed?"""
    return [node.args[-1][0] for gm in graphs.values() for node in gm.graph.nodes
            if node.op == "call_function" and str(node.target) == "aten.convolution_backward.default"]


def test_the_compiled_iteration_has_the_peers_convolutions_gemms_and_pools() -> None:
    mine, theirs = ours("fp32", False, 1), peer("fp32", False, 1)
    assert list(mine) == ["forward"], "ours is not one graph"
    counts, peers = operators(mine), operators(theirs)
    assert {op: counts[op] for op in HEAVY} == {op: peers[op] for op in HEAVY}
    assert counts["convolution.default"] == 5
    # conv1's input gradient is not computed (the last backward is conv1's), the others' are.
    assert _input_gradients(mine) == _input_gradients(theirs) == [True, True, True, True, False]
