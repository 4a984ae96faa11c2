"""The compiled training iteration: one graph with no break, the eager trajectory over Caffe's
e2e run, no host sync between the iterations that read values, and the pieces that make that
possible (the fused SGD update, the smoothed loss on the device, labels checked on the host).

Compiling takes seconds on this machine, so these tests use the aot_eager backend (the graph
torch.compile captures, run by eager kernels): what they prove is the capture, not inductor's
code.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from replicate.errors import ReplicateError
from replicate.io.prototxt import parse_text
from replicate.io.binary import read_binary
from replicate.io.blobs import blob_to_array
from replicate.net.compile import CompiledNet
from replicate.proto import caffe_pb2
from replicate.solver.log import RunLog
from replicate.solver.loss_monitor import LossMonitor
from replicate.solver.run import train
from replicate.solver.solver import Solver
from replicate.solver.updates import FusedSgd, UpdateRule
from solver_support import copy_run, params

pytestmark = pytest.mark.compiled

NET = """
name: "tiny"
layer { name: "in" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 3 dim: 9 dim: 9 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 0 } param { lr_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 3 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  param { name: "shared" lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3" param { name: "shared" } param { lr_mult: 2 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "drop" type: "Dropout" bottom: "conv3" top: "conv3" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv3" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" }
"""


def parse_net_text(text: str) -> caffe_pb2.NetParameter:
    return parse_text(text, caffe_pb2.NetParameter())


def parse_solver_text(text: str) -> caffe_pb2.SolverParameter:
    return parse_text(text, caffe_pb2.SolverParameter())


def tiny_solver(compile: bool | str, extra: str = "", device: torch.device = torch.device("cpu")) -> Solver:
    param = parse_solver_text(
        "base_lr: 0.01 momentum: 0.9 weight_decay: 0.004 lr_policy: 'fixed' max_iter: 100 display: 0 "
        "random_seed: 1 " + extra
    )
    param.net_param.CopyFrom(parse_net_text(NET))
    return Solver(param, Path.cwd(), device, RunLog(None, echo=False), compile=compile)


def tiny_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"data": torch.randn(4, 3, 9, 9, generator=g), "label": torch.tensor([0.0, 2.0, 1.0, 2.0])}


def test_a_compiled_sgd_iteration_is_one_graph_without_breaks() -> None:
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=1):
        # Each solver compiles its own iteration: a process may build many (tests, benchmarks).
        for solver in (tiny_solver("aot_eager"), tiny_solver("aot_eager")):
            solver.iteration(tiny_batch())
    assert solver.unfused is None and solver.fused is not None
    fused = solver.fused
    explained = torch._dynamo.explain(fused.step)(fused.weights, solver.net.feed(tiny_batch(1)), fused.rate)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    ops = {str(node.target) for graph in explained.graphs for node in graph.graph.nodes}
    assert any("_foreach_sub_" in op for op in ops)  # the update is in it, after the gradients
    program = torch._dynamo.explain(solver.net.program)(solver.net.feed(tiny_batch()))
    assert (program.graph_count, program.graph_break_count) == (1, 0)


@pytest.mark.parametrize("extra, reason", [
    ("type: 'Adam' momentum2: 0.999", "solver type Adam"),
    ("iter_size: 2", "iter_size 2"),
    ("clip_gradients: 1", "clip_gradients"),
])
def test_other_solvers_compile_the_net_and_keep_the_update_loop(extra: str, reason: str) -> None:
    solver = tiny_solver("aot_eager", extra)
    assert solver.unfused == reason
    loss, _ = solver.iteration(tiny_batch())
    assert solver.fused is None and torch.isfinite(loss)
    assert [c["passed"] for c in solver.compile_checks] == [True]  # the compiled net, dropout masks drawn outside


def test_a_net_whose_forward_writes_its_blobs_keeps_the_update_loop() -> None:
    net = NET.replace('layer { name: "relu2"', 'layer { name: "bn" type: "BatchNorm" bottom: "conv2" top: "conv2" }\n'
                                               'layer { name: "relu2"')
    param = parse_solver_text("base_lr: 0.01 lr_policy: 'fixed' max_iter: 10 display: 0")
    param.net_param.CopyFrom(parse_net_text(net))
    solver = Solver(param, Path.cwd(), torch.device("cpu"), RunLog(None, echo=False), compile="aot_eager")
    assert solver.unfused == "layer bn updates its blobs in the forward"


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_compiled_trajectory_equals_the_eager_one_over_the_e2e_run(tmp_path: Path) -> None:
    """Caffe's 20-iteration e2e run from init.caffemodel: frozen conv1, LRN, grouped conv, an lr
    step at iteration 8, tests every 5 iterations, snapshots at 10 and 20."""
    runs = {}
    torch._dynamo.reset()
    counters.clear()
    for compile in (False, "aot_eager"):
        run = copy_run(tmp_path, str(compile))
        train(run / "solver.prototxt", weights=str(run / "init.caffemodel"), echo=False, compile=compile)
        runs[compile] = run
    # One graph for the training iteration and one for the test net: the lr step recompiled nothing.
    assert counters["stats"]["unique_graphs"] == 2 and not counters["graph_break"]
    assert "Training iteration: one compiled graph" in (runs["aot_eager"] / "train.log").read_text()
    eager, compiled = _records(runs[False]), _records(runs["aot_eager"])
    checks = [r for r in compiled if r["kind"] == "compile_check"]
    assert [(r["checked"], r["iter"], r["passed"]) for r in checks] == [("test net #0", 0, True),
                                                                       ("training iteration", 0, True)]
    compiled = [r for r in compiled if r["kind"] != "compile_check"]
    assert [(r["kind"], r.get("iter")) for r in eager] == [(r["kind"], r.get("iter")) for r in compiled]
    # The e2e replay's criterion for logged numbers: the late losses are -log(p) of p near 1 (about
    # 0.005), where float rounding of p is a larger share of the loss.
    for a, b in zip(eager, compiled):
        if a["kind"] == "train":
            assert a["lr"] == b["lr"]
            np.testing.assert_allclose([b["loss"], b["smoothed_loss"]], [a["loss"], a["smoothed_loss"]],
                                       rtol=1e-5, atol=1e-6)
        elif a["kind"] == "test":
            np.testing.assert_allclose(list(b["outputs"].values()), list(a["outputs"].values()), rtol=1e-5, atol=1e-6)
    assert len([r for r in eager if r["kind"] == "train"]) == 20
    for it in (10, 20):
        mine, theirs = params(runs["aot_eager"] / f"snap_iter_{it}.caffemodel"), params(runs[False] / f"snap_iter_{it}.caffemodel")
        for layer in theirs:
            for a, b in zip(mine[layer], theirs[layer]):
                assert np.abs(a - b).max() <= 1e-5 * max(np.abs(b).max(), 1e-30), (it, layer)
        states = [read_binary(run / f"snap_iter_{it}.solverstate", caffe_pb2.SolverState()) for run in runs.values()]
        for h, g in zip(states[1].history, states[0].history):
            a, b = blob_to_array(h), blob_to_array(g)
            assert np.abs(a - b).max() <= 1e-5 * max(np.abs(b).max(), 1e-30), it


#: aten ops that make the host wait for a GPU: a value read (item, float(), bool()), or an output
#: whose size depends on values.  (tolist, numpy and cpu are counted by patching: on a CPU tensor
#: they do not reach the dispatcher.)
SYNCING_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::masked_select", "aten::_unique2",
               "aten::unique_consecutive", "aten::equal", "aten::is_nonzero"}
HOST_READS = ("tolist", "numpy", "cpu")
FEED = "host feed"


@contextlib.contextmanager
def host_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The calls inside that would wait for a GPU, outside `CompiledNet.feed` (whose work is on
    host batches before they go to the device).  Sees through compiled code (the profiler
    records the aten ops a compiled graph runs)."""
    found: list[str] = []
    feeding = [0]

    def counted(name: str, method):
        @functools.wraps(method)
        def read(self, *args, **kwargs):
            if not feeding[0]:
                found.append(f"Tensor.{name}")
            return method(self, *args, **kwargs)
        return read

    def feed(original):
        @functools.wraps(original)
        def wrapped(*args, **kwargs):
            feeding[0] += 1
            try:
                with torch.profiler.record_function(FEED):
                    return original(*args, **kwargs)
            finally:
                feeding[0] -= 1
        return wrapped

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(CompiledNet, "feed", feed(CompiledNet.feed))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        yield found

    def in_feed(event) -> bool:
        while event is not None:
            if event.name == FEED:
                return True
            event = event.cpu_parent
        return False

    found += [e.name for e in prof.events() if e.name in SYNCING_OPS and not in_feed(e)]


@pytest.mark.parametrize("compile", [False, "aot_eager"])
def test_iterations_that_neither_display_test_nor_snapshot_never_wait_for_the_device(
    compile: bool | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    solver = tiny_solver(compile)
    solver.step(2)  # warm-up: compiling reads shapes, and the fused update checks frozen histories once
    with host_syncs(monkeypatch) as syncs:
        solver.step(5)
    # display 0, no test, no snapshot: one read of the loss monitor after the 5 iterations.
    assert syncs == ["Tensor.tolist"], syncs


def test_the_smoothed_loss_has_caffes_float_bits_and_the_first_bad_loss_is_kept() -> None:
    losses = np.float32([2.3, 2.1000001, 1.7, 1.9, 1.3333334, 0.7, 1.1, 0.3])
    average = 3
    reference, window, smoothed = [], [], np.float32(0)
    for k, value in enumerate(losses):  # Caffe's UpdateSmoothedLoss in float
        if len(window) < average:
            window.append(value)
            n = np.float32(len(window))
            smoothed = (smoothed * (n - np.float32(1)) + value) / n
        else:
            i = k % average
            smoothed = smoothed + (value - window[i]) / np.float32(average)
            window[i] = value
        reference.append(smoothed)
    monitor = LossMonitor(average, torch.device("cpu"))
    mine = []
    for k, value in enumerate(losses):
        monitor.add(torch.tensor(value), 100 + k, k, rate=0.01)
        mine.append(monitor.read().smoothed)
    assert np.float32(mine).tobytes() == np.float32(reference).tobytes()
    for k, value in enumerate([1.0, float("nan"), float("inf"), 2.0]):
        monitor.add(torch.tensor(value, dtype=torch.float32), 200 + k, k, rate=0.01)
    reading = monitor.read()
    assert reading.diverged is not None and reading.diverged[0] == 201 and np.isnan(reading.diverged[1])
    assert [r[0] for r in reading.records] == [200, 201, 202, 203]


@pytest.mark.parametrize("regularization", ["L2", "L1"])
def test_the_fused_sgd_update_is_the_update_loop(regularization: str) -> None:
    param = caffe_pb2.SolverParameter(type="SGD", momentum=0.9, weight_decay=0.01, regularization_type=regularization)
    shapes = [(3, 4), (4,), (2, 2), (5,), (3,)]
    lr_mults, decay_mults = [1.0, 2.0, 0.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0, 2.0]
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=g) for s in shapes]
    loop, fused = (UpdateRule(param, [torch.Size(s) for s in shapes], torch.device("cpu")) for _ in range(2))
    for rule in (loop, fused):
        rule.history[2].copy_(torch.randn(2, 2, generator=torch.Generator().manual_seed(1)))  # a frozen blob with history
    loop_w, fused_w = [w.clone() for w in start], [w.clone() for w in start]
    update = FusedSgd(fused, lr_mults, decay_mults)
    assert sorted(key for key, _ in update.groups) == [(0.0, 1.0), (1.0, 1.0), (1.0, 2.0), (2.0, 0.0)]  # blob 3 never moves
    for step, rate in enumerate([0.1, 0.1, 0.01]):
        grads = [torch.randn(s, generator=g) for s in shapes]
        loop.apply(loop_w, [x.clone() if m else torch.zeros_like(x) for x, m in zip(grads, lr_mults)],
                   lr_mults, decay_mults, rate, step)
        update.apply(fused_w, [x.clone() if m else None for x, m in zip(grads, lr_mults)], torch.tensor(rate))
        for a, b in zip(fused_w + fused.history, loop_w + loop.history):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert torch.equal(fused_w[3], start[3])


LABELLED = """
name: "labels"
layer { name: "in" type: "Input" top: "data" top: "label" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" top: "loss" loss_param { ignore_label: 7 } }
layer { name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" }
"""


def test_labels_are_checked_on_the_host_where_the_batch_arrives() -> None:
    net = CompiledNet(parse_net_text(LABELLED.replace(" top: \"acc\" }", " top: \"acc\" accuracy_param { ignore_label: 7 } }")),
                      caffe_pb2.TRAIN)
    assert [r.layer for r in net.label_checks["label"]] == ["loss", "acc"]
    assert not any(layer.checks_labels for layer in net.layers)
    data = torch.randn(2, 3)
    net({"data": data, "label": torch.tensor([2.0, 7.0])})  # ignore_label may be anything
    with pytest.raises(ReplicateError, match=r"layer 'loss' \(SoftmaxWithLoss\): label 3 in blob 'label' out of range \[0, 3\)"):
        net.feed({"data": data, "label": torch.tensor([3.0, 0.0])})
    strict = CompiledNet(parse_net_text(LABELLED), caffe_pb2.TRAIN)
    with pytest.raises(ReplicateError, match=r"layer 'acc' \(Accuracy\): label 7 in blob 'label'"):
        strict.feed({"data": data, "label": torch.tensor([7.0, 0.0])})
    with pytest.raises(ReplicateError, match=r"label -1 in blob 'label'"):
        strict.feed({"data": data, "label": torch.tensor([-1.5, 0.0])})
    strict.feed({"data": data, "label": torch.tensor([-0.5, 2.9])})  # truncated to 0 and 2, as static_cast<int>


def test_labels_computed_by_a_layer_are_checked_in_its_forward_and_keep_the_update_loop() -> None:
    text = LABELLED.replace('bottom: "data" bottom: "label" top: "loss"', 'bottom: "data" bottom: "label2" top: "loss"')
    text = text.replace('layer { name: "loss"', 'layer { name: "copy" type: "Split" bottom: "label" top: "label2" }'
                                                '\nlayer { name: "loss"')
    net = CompiledNet(parse_net_text(text), caffe_pb2.TRAIN)
    assert net.layer("loss").checks_labels == "label2" and [r.layer for r in net.label_checks["label"]] == ["acc"]
    with pytest.raises(ReplicateError, match=r"layer 'loss' \(SoftmaxWithLoss\): label 5 in blob 'label2'"):
        net.program({"data": torch.randn(2, 3), "label": torch.tensor([5.0, 0.0])})
    param = parse_solver_text("base_lr: 0.1 lr_policy: 'fixed' display: 0 max_iter: 1")
    param.net_param.CopyFrom(parse_net_text(text))
    solver = Solver(param, Path.cwd(), torch.device("cpu"), RunLog(None, echo=False), compile="aot_eager")
    assert solver.unfused == "labels computed inside the net (layer loss)"


#: The shape of the tiny net's dropout top (conv3): its mask is an input of the compiled iteration.
KEEP_SHAPE = (4, 4, 7, 7)


def _feeding_wrong(kind: str):
    """A torch.compile backend whose compiled code is wrong in one way: it runs the captured graph
    as is, but with one input changed: the learning rate doubled ("rate"), the images scaled by
    1.01 ("data"), the dropout mask all ones ("dropout"), or the rate off by 1e-6 relative
    ("nudge", within fp32's tolerance)."""
    def change(a):
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            return a
        if kind in ("rate", "nudge") and a.dim() == 0:
            return a * (2.0 if kind == "rate" else 1.000001)
        if kind == "data" and a.dim() == 4 and a.shape[1] == 3:
            return a * 1.01
        if kind == "dropout" and tuple(a.shape) == KEEP_SHAPE:
            return torch.ones_like(a)
        return a

    def backend(graph: torch.fx.GraphModule, example_inputs):
        return lambda *args: graph(*(change(a) for a in args))
    return backend


WRONG = ("rate", "data", "dropout", "nudge")
for _kind in WRONG:
    torch._dynamo.register_backend(_feeding_wrong(_kind), name=f"replicate_test_wrong_{_kind}")


def logged_solver(folder: Path, compile: bool | str, device: torch.device = torch.device("cpu")) -> Solver:
    """The tiny solver with a test net, its log and metrics in `folder`."""
    folder.mkdir()
    param = parse_solver_text("base_lr: 0.01 momentum: 0.9 weight_decay: 0.004 lr_policy: 'fixed' max_iter: 100 "
                              "display: 0 random_seed: 1 test_iter: 1 test_interval: 1000")
    param.net_param.CopyFrom(parse_net_text(NET))
    return Solver(param, folder, device, RunLog(folder, echo=False), compile=compile)


def _train(solver: Solver, iterations: int = 3) -> list[torch.Tensor]:
    """A test, then `iterations` iterations on fixed batches: the weights after them."""
    solver.test(0, tiny_batch(9))
    for k in range(iterations):
        solver.iteration(tiny_batch(k))
        solver.iter += 1
    return [e.param.detach().clone() for e in solver.entries]


@pytest.mark.parametrize("kind", ["rate", "data", "dropout"])
def test_a_wrong_compiled_iteration_is_caught_and_the_run_goes_on_eager(kind: str, tmp_path: Path) -> None:
    """Each wrong backend differs from eager code far beyond fp32's tolerance: the check catches it
    at the first test batch (wrong images) or the first iteration (wrong rate, dropout
    arithmetic), says so in the log and in metrics.jsonl, and the run is then the eager run, bit
    for bit: from the check's eager result on, with the same dropout masks."""
    torch._dynamo.reset()
    solver = logged_solver(tmp_path / "compiled", f"replicate_test_wrong_{kind}")
    weights = _train(solver)
    eager = _train(logged_solver(tmp_path / "eager", False))
    for w, e in zip(weights, eager):
        assert torch.equal(w, e)
    checks = [r for r in _records(tmp_path / "compiled") if r["kind"] == "compile_check"]
    expected = [("test net #0", False)] if kind == "data" else [("test net #0", True), ("training iteration", False)]
    assert [(r["checked"], r["passed"]) for r in checks] == expected
    assert checks[-1]["difference"] > 1e-3 and checks[-1]["tolerance"] == 1e-5
    assert checks[-1]["torch"] == torch.__version__ and checks[-1]["iter"] == 0
    warnings = [line for line in (tmp_path / "compiled" / "train.log").read_text().splitlines() if line.startswith("W")]
    assert len(warnings) == 1 and f"is wrong on torch {torch.__version__}" in warnings[0]
    assert solver.fused is None and "failed its check" in solver.unfused


@pytest.mark.parametrize("compile, passed", [("aot_eager", True), ("replicate_test_wrong_rate", False)])
def test_in_bf16_the_check_holds_compiled_code_to_eager_bf16s_distance_from_fp32(
    compile: str, passed: bool, tmp_path: Path
) -> None:
    """bf16's own rounding moves compiled and eager results apart; the check measures both against
    the fp32 iteration instead: right code passes, the doubled rate does not."""
    torch._dynamo.reset()
    param = parse_solver_text("base_lr: 0.01 momentum: 0.9 lr_policy: 'fixed' max_iter: 10 display: 0 random_seed: 1")
    param.net_param.CopyFrom(parse_net_text(NET))
    solver = Solver(param, tmp_path, torch.device("cpu"), RunLog(tmp_path, echo=False), "bf16", compile=compile)
    solver.iteration(tiny_batch())
    (check,) = solver.compile_checks
    assert (check["passed"], check["precision"], check["tolerance"]) == (passed, "bf16", 1.0)
    assert 0 < check["eager_from_fp32"] < 0.1 and (check["difference"] <= 1.0) == passed
    assert (solver.fused is not None) == passed


def test_a_passed_check_leaves_the_compiled_trajectory_as_it_was(tmp_path: Path) -> None:
    """A compiled iteration off by 1e-6 (the rate) passes; the run goes on from the compiled
    outcome, bit for bit the run that was never checked, not the eager one.  And since the
    difference from eager stays that small, compiled and eager code drew the same dropout masks."""
    torch._dynamo.reset()
    runs = []
    for name, compile in (("checked", "replicate_test_wrong_nudge"), ("unchecked", "replicate_test_wrong_nudge"),
                          ("eager", False)):
        solver = logged_solver(tmp_path / name, compile)  # seeds torch's generator: one solver at a time
        if name == "unchecked":
            solver._check_pending, solver._tests_unchecked = False, set()
        runs.append(_train(solver))
        if name == "checked":
            checked = solver
    assert checked.fused is not None and checked.compile_checks[-1]["passed"]
    assert 0 < checked.compile_checks[-1]["difference"] < 1e-5
    for a, b, e in zip(*runs):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-7)
    assert any(not torch.equal(a, e) for a, e in zip(runs[0], runs[2]))


def _other_stream(graph: torch.fx.GraphModule, example_inputs):
    """A backend whose compiled code draws its random numbers from a stream of its own, as
    inductor's does (it seeds its own generator): the captured graph, run after reseeding torch's
    generator, which is put back afterwards."""
    def run(*args):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(12345)
            return graph(*args)
    return run


torch._dynamo.register_backend(_other_stream, name="replicate_test_other_stream")


def test_compiled_and_eager_iterations_draw_the_same_dropout_masks() -> None:
    """Compiled code with a random stream of its own, like inductor's, multiplies by the masks the
    solver drew from torch's generator: three iterations of the tiny net (dropout 0.5 on conv3)
    pass the check and stay with the eager ones."""
    torch._dynamo.reset()
    runs = []
    for compile in (False, "replicate_test_other_stream"):
        solver = tiny_solver(compile)
        for k in range(3):
            solver.iteration(tiny_batch(k))
            solver.iter += 1
        runs.append([e.param.detach().clone() for e in solver.entries])
    assert solver.fused is not None and solver.compile_checks[0]["difference"] < 1e-6
    for a, b in zip(*runs):  # the fused update's rounding differs from the update loop's
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
