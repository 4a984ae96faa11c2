"""The ATen operators in our compiled CaffeNet iteration against the compiled peer's, counted.

  python -m replicate.bench.graph_ops --precision fp32 [--channels-last] [--batch 2] [--out DIR]

What AOTAutograd hands the compiler backend, on any device (the CPU is enough): ours is one graph
(forward, backward by torch.func and Caffe's SGD update); the peer's (replicate.bench.peer) a
forward and a backward graph, its optimizer outside.  A difference in convolutions, GEMMs or
casts here is a difference in kernels on the GPU before any fusion: the first question of issue
20 item 3, answered without a GPU.  Prints one row per operator; --out writes each graph's code.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch._dynamo import register_backend
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func

from replicate.bench.peer import peer_step
from replicate.bench.step import caffenet, run_iterations, solver_param, synthetic_batch
from replicate.solver.log import RunLog
from replicate.solver.solver import Solver

#: (kind, graph) of every graph compiled with the "graph_ops" backend since it was last emptied.
_GRAPHS: list[tuple[str, torch.fx.GraphModule]] = []


def _keep(kind: str) -> Callable[[torch.fx.GraphModule, list[torch.Tensor]], Callable]:
    def compiler(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Callable:
        _GRAPHS.append((kind, gm))
        return make_boxed_func(gm.forward)
    return compiler


register_backend(name="graph_ops")(aot_autograd(fw_compiler=_keep("forward"), bw_compiler=_keep("backward")))


def _taken() -> dict[str, torch.fx.GraphModule]:
    graphs = {kind: gm for kind, gm in _GRAPHS}
    _GRAPHS.clear()
    return graphs


def ours(precision: str, channels_last: bool, batch: int) -> dict[str, torch.fx.GraphModule]:
    """Our compiled CaffeNet iteration's graphs, by kind, from two iterations on the CPU."""
    device = torch.device("cpu")
    _GRAPHS.clear()
    with tempfile.TemporaryDirectory() as folder:
        solver = Solver(solver_param(caffenet(batch), device), Path(folder), device, RunLog(None, None),
                        precision, channels_last, "graph_ops")
        try:
            run_iterations(solver, synthetic_batch(batch, device, channels_last), 2)
        finally:
            solver.close()
    return _taken()


def peer(precision: str, channels_last: bool, batch: int) -> dict[str, torch.fx.GraphModule]:
    """The compiled peer's graphs, by kind, from one step on the CPU."""
    _GRAPHS.clear()
    peer_step(torch.device("cpu"), batch, precision, channels_last, "graph_ops")()
    return _taken()


def operators(graphs: dict[str, torch.fx.GraphModule]) -> collections.Counter[str]:
    """How many times each operator is called in `graphs` ("convolution.default", ...)."""
    return collections.Counter(str(node.target).removeprefix("aten.") for gm in graphs.values()
                               for node in gm.graph.nodes if node.op == "call_function")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", type=Path, help="folder for each graph's code")
    args = parser.parse_args()
    counts = {}
    for who, graphs_of in (("ours", ours), ("peer", peer)):
        graphs = graphs_of(args.precision, args.channels_last, args.batch)
        print(f"{who}: " + ", ".join(f"{kind} graph of {len(gm.graph.nodes)} nodes" for kind, gm in graphs.items()))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            for kind, gm in graphs.items():
                (args.out / f"{who}_{kind}.py").write_text(gm.print_readable(print_output=False))
        counts[who] = operators(graphs)
    print(f"{'operator':44s} {'ours':>5s} {'peer':>5s}")
    names = set(counts["ours"]) | set(counts["peer"])
    for name in sorted(names, key=lambda k: (-(counts["ours"][k] + counts["peer"][k]), k)):
        print(f"{name:44s} {counts['ours'][name]:5d} {counts['peer'][name]:5d}")


if __name__ == "__main__":
    main()
