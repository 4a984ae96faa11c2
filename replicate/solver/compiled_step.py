"""One training iteration as one compiled graph: forward, backward and Caffe's SGD update.

`torch.compile` of the net's forward alone gives a forward graph, a backward graph that autograd
runs, and leaves the update to a Python loop of small kernels.  Here the whole iteration is one
function that torch.compile captures with fullgraph=True: the net's straight-line program
(replicate.net.program), its gradients by `torch.func.grad_and_value` (so the backward is traced
into the same graph), and `FusedSgd`.  On a CUDA device the compiled iteration is then recorded
once as a CUDA graph and replayed: a step costs one launch, the batch is copied into the graph's
input buffers, and the learning rate is a device tensor the graph reads.

Nothing in it reads a value back to the host, so an iteration never waits for the device.  It
serves SGD with iter_size 1, no gradient clipping, one process and a net with a loss, whose
labels come from its data or input layers and whose layers do not write their own blobs
(`why_not_fused`); every other solver runs the compiled program with autograd's backward and
the update rule's loop.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from replicate.net.compile import CompiledNet, ParamEntry
from replicate.solver.updates import FusedSgd, UpdateRule

#: Iterations run as plain compiled calls before the CUDA graph is recorded: compilation, cuDNN's
#: algorithm search and the allocator's first allocations happen in those.
CUDA_GRAPH_WARMUP = 3


def why_not_fused(rule: UpdateRule, net: CompiledNet, world: int) -> str | None:
    """Why this solver cannot run as one compiled iteration (None: it can)."""
    param = rule.param
    if rule.kind != "SGD":
        return f"solver type {rule.kind}"
    if param.iter_size != 1:
        return f"iter_size {param.iter_size}"
    if param.clip_gradients >= 0:
        return "clip_gradients"
    if world > 1:
        return "data parallel"
    if not net.blob_loss_weights:
        return "a net without loss"
    checked = [layer.name for layer in net.layers if layer.checks_labels]
    if checked:
        return f"labels computed inside the net (layer {checked[0]})"
    writers = [layer.name for layer in net.layers if layer.writes_blobs]
    if writers:
        return f"layer {writers[0]} updates its blobs in the forward"
    return None


class CompiledIteration:
    """`iteration(feed, rate) -> (loss, outputs)`: one iteration of SGD on `net`, compiled.

    `feed` is `net.feed(...)`, `rate` the iteration's learning rate; `loss` is the float32 loss
    and `outputs` the net outputs of this iteration's forward, on the device (the loss a fresh
    tensor; the outputs are overwritten by the next iteration when a CUDA graph replays)."""

    def __init__(
        self,
        net: CompiledNet,
        entries: list[ParamEntry],
        rule: UpdateRule,
        backend: str | Callable,
        autocast: Callable[[], AbstractContextManager],
        cuda_graph: bool = True,
    ):
        self.program = net.program
        names = {id(p): name for name, p in self.program.named_parameters()}
        self.learned = [i for i, e in enumerate(entries) if e.param.requires_grad]
        self.learned_names = [names[id(entries[i].param)] for i in self.learned]
        # Detached aliases: the update writes the parameters' storage, outside autograd.
        self.weights = [e.param.detach() for e in entries]
        self.update = FusedSgd(rule, [e.lr_mult for e in entries], [e.decay_mult for e in entries])
        self.autocast = autocast
        self.device = net.device
        self.rate = torch.zeros((), dtype=torch.float32, device=self.device)
        self._rate_value: float | None = None
        self.compiled = torch.compile(_own_code(self.step), backend=backend, fullgraph=True, dynamic=False)
        self.cuda_graph = cuda_graph and self.device.type == "cuda"
        self._calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_feed: dict[str, torch.Tensor] = {}
        self._static_out: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    def step(
        self, weights: list[torch.Tensor], feed: dict[str, torch.Tensor], rate: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The iteration as torch.compile traces it: `weights` are every learnable blob (updated in
        place), the gradients are taken for those with a nonzero lr_mult."""

        def loss_of(learned: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            with self.autocast():
                loss, outputs = torch.func.functional_call(
                    self.program, dict(zip(self.learned_names, learned)), (feed,)
                )
            return loss, outputs

        grads, (loss, outputs) = torch.func.grad_and_value(loss_of, has_aux=True)([weights[i] for i in self.learned])
        every: list[torch.Tensor | None] = [None] * len(weights)
        for i, g in zip(self.learned, grads):
            every[i] = g
        self.update.apply(weights, every, rate)
        return loss.float(), outputs

    def __call__(self, feed: dict[str, torch.Tensor], rate: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if rate != self._rate_value:
            self.rate.fill_(rate)
            self._rate_value = rate
        if not self.cuda_graph:
            return self.compiled(self.weights, feed, self.rate)
        if self._graph is None and self._calls < CUDA_GRAPH_WARMUP:
            self._calls += 1
            return self._warm_up(feed)
        if self._graph is None:
            self._record(feed)
        for name, value in feed.items():
            self._static_feed[name].copy_(value, non_blocking=True)
        self._graph.replay()
        loss, outputs = self._static_out
        return loss.clone(), outputs

    def _warm_up(self, feed: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A plain compiled call on a side stream, as CUDA graph capture requires of warm-up work."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            result = self.compiled(self.weights, feed, self.rate)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return result

    def _record(self, feed: dict[str, torch.Tensor]) -> None:
        """Record the compiled iteration once, on buffers each later batch is copied into.
        Recording runs nothing: the first replay is this iteration's step."""
        self._static_feed = {name: torch.empty_like(value) for name, value in feed.items()}
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._static_out = self.compiled(self.weights, self._static_feed, self.rate)


def _own_code(method: types.MethodType) -> types.MethodType:
    """`method` with a code object of its own.  Dynamo keeps compiled code per code object and
    recompiles one at most `recompile_limit` (8) times, after which it runs the function
    uncompiled; every CompiledIteration's `step` guards on its own instance, so without this the
    ninth solver of a process (a test session, a benchmark) would train uncompiled."""
    f = method.__func__
    code = f.__code__.replace()
    return types.MethodType(types.FunctionType(code, f.__globals__, f.__name__, f.__defaults__, f.__closure__), method.__self__)
