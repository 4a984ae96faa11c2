"""Solver pieces a golden trajectory does not reach: policies, update order, paths, CLI, progress."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
import torch

from replicate.cli import main
from replicate.errors import ReplicateError
from replicate.io.prototxt import parse_text
from replicate.proto import caffe_pb2
from replicate.solver.lr_policy import check_policy, learning_rate
from replicate.solver import run as solver_run
from replicate.solver.log import RunLog
from replicate.solver import nets as solver_nets
from replicate.net.paths import resolve_layer_paths, written_paths
from replicate.solver.updates import UpdateRule

E2E = Path(__file__).parent / "golden" / "caffe_train_e2e"


def _solver(text: str) -> caffe_pb2.SolverParameter:
    return parse_text(text, caffe_pb2.SolverParameter())


def test_paper_schedule_drops_tenfold_every_100k_iterations() -> None:
    paper = _solver('base_lr: 0.01 lr_policy: "step" gamma: 0.1 stepsize: 100000 max_iter: 450000')
    rates = [learning_rate(paper, it, 0)[0] for it in (0, 99999, 100000, 250000, 449999)]
    assert rates == pytest.approx([0.01, 0.01, 0.001, 0.0001, 1e-6], rel=1e-6)


def test_multistep_advances_one_step_per_call_like_caffe() -> None:
    s = _solver('base_lr: 1 lr_policy: "multistep" gamma: 0.5 stepvalue: 2 stepvalue: 3')
    step, rates = 0, []
    for it in range(5):
        rate, step = learning_rate(s, it, step)
        rates.append(rate)
    assert rates == [1, 1, 0.5, 0.25, 0.25]


@pytest.mark.parametrize(
    "text, message",
    [('lr_policy: "cosine"', "unknown lr_policy 'cosine'"), ('lr_policy: "step"', "positive stepsize"),
     ('lr_policy: "poly"', "positive max_iter"),
     ('lr_policy: "step" stepsize: 10 gamma: -0.1', r"lr_policy 'step' needs a gamma of 0 or more, not -0\.1"),
     ('lr_policy: "inv" gamma: -1e-4', r"lr_policy 'inv' needs a gamma of 0 or more, not -0\.0001")],
)
def test_bad_policy_is_refused_before_training(text: str, message: str) -> None:
    with pytest.raises(ReplicateError, match=message):
        check_policy(_solver(text))


def test_unknown_solver_type_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(E2E, run, ignore=shutil.ignore_patterns("caffe"))
    with open(run / "solver.prototxt", "a") as f:
        f.write('type: "LBFGS"\n')
    with pytest.raises(ReplicateError, match="unknown solver type 'LBFGS'"):
        solver_run.train(run / "solver.prototxt", echo=False)


@pytest.mark.parametrize("decay, ok", [(0.0, True), (0.99, True), (1.0, False), (-0.1, False)])
def test_rmsprop_decay_range_is_caffes(decay: float, ok: bool) -> None:
    # Caffe's RMSPropSolver CHECKs 0 <= rms_decay < 1 (pycaffe 9b89154 aborts at 1).
    param = _solver(f'type: "RMSProp" rms_decay: {decay}')
    if ok:
        UpdateRule(param, [torch.Size([2])], torch.device("cpu"))
    else:
        with pytest.raises(ReplicateError, match=r"^rms_decay must be within \[0, 1\), not "):
            UpdateRule(param, [torch.Size([2])], torch.device("cpu"))


def test_solver_weights_field_is_refused_not_left_unread(tmp_path: Path) -> None:
    # Caffe's InitTrainNet fine-tunes from them; unread, the net would train from its fillers.
    run = tmp_path / "run"
    shutil.copytree(E2E, run, ignore=shutil.ignore_patterns("caffe"))
    with open(run / "solver.prototxt", "a") as f:
        f.write('weights: "base.caffemodel"\n')
    with pytest.raises(ReplicateError, match=r"solver's weights field \(base.caffemodel\) is not supported"):
        solver_run.train(run / "solver.prototxt", echo=False)


def test_test_command_scores_caffes_snapshot() -> None:
    means = solver_run.test(E2E / "val.prototxt", E2E / "caffe" / "snap_iter_20.caffemodel", iterations=2)
    # Caffe's own final test of this snapshot (its log): accuracy 0.1875, loss 1.61511.
    assert means["accuracy"] == pytest.approx(0.1875)
    assert means["loss"] == pytest.approx(1.61511, abs=1e-5)


def test_iter_size_normalizes_the_accumulated_gradient_before_decay() -> None:
    # Caffe's ApplyUpdate: Normalize (diff / iter_size), then Regularize, then the momentum update.
    def one_update(iter_size: int, grad_scale: float) -> torch.Tensor:
        s = _solver(f"momentum: 0.9 weight_decay: 0.1 iter_size: {iter_size}")
        rule = UpdateRule(s, [torch.Size([3])], torch.device("cpu"))
        w = torch.tensor([1.0, -2.0, 0.5])
        g = torch.tensor([0.3, 0.1, -0.2]) * grad_scale
        rule.apply([w], [g], [2.0], [1.0], rate=0.01, iteration=0)
        return w

    accumulated = one_update(iter_size=4, grad_scale=4.0)
    single = one_update(iter_size=1, grad_scale=1.0)
    torch.testing.assert_close(accumulated, single, rtol=0, atol=1e-7)
    expected = torch.tensor([1.0, -2.0, 0.5]) - 0.02 * (torch.tensor([0.3, 0.1, -0.2]) + 0.1 * torch.tensor([1.0, -2.0, 0.5]))
    torch.testing.assert_close(single, expected, rtol=0, atol=1e-7)


def test_test_command_prints_batches_loss_and_means_like_caffe_test(capsys: pytest.CaptureFixture[str]) -> None:
    model, weights = E2E / "val.prototxt", E2E / "caffe" / "snap_iter_20.caffemodel"
    assert main(["test", "--model", str(model), "--weights", str(weights), "--iterations", "2"]) == 0
    lines = [line.split("] ", 1)[1] for line in capsys.readouterr().err.splitlines() if "] " in line]
    assert [l for l in lines if l.startswith("Batch ")] == [
        "Batch 0, accuracy = 0.25", "Batch 0, loss = 1.5795", "Batch 1, accuracy = 0.125", "Batch 1, loss = 1.65072"
    ]
    # The means are Caffe's own final test of this snapshot (caffe/train.log, iteration 20).
    assert lines[-3:] == ["Loss: 1.61511", "accuracy = 0.1875", "loss = 1.61511 (* 1 = 1.61511 loss)"]


def test_net_paths_resolve_against_the_solver_folder_keeping_root_folder_slash() -> None:
    net = parse_text(
        'layer { name: "d" type: "ImageData" top: "data" top: "label" '
        'image_data_param { source: "list.txt" root_folder: "images/" batch_size: 1 } '
        'transform_param { mean_file: "/abs/mean.binaryproto" } }',
        caffe_pb2.NetParameter(),
    )
    out = resolve_layer_paths(net.layer[0], Path("/runs/a"))
    assert out.image_data_param.source == "/runs/a/list.txt"
    assert out.image_data_param.root_folder == "/runs/a/images/"
    assert out.transform_param.mean_file == "/abs/mean.binaryproto"
    assert written_paths(out, net.layer[0]) == net.layer[0]  # what a snapshot writes


def test_solver_nets_merge_the_nets_own_state_like_caffe(tmp_path: Path) -> None:
    """InitTrainNet/InitTestNets: the solver's phase, then the net's `state`, then the solver's
    train_state/test_state, each overriding only what it sets; a level the net sets is kept."""
    (tmp_path / "net.prototxt").write_text('state { level: 1 stage: "own" }\n'
                                           'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }')
    solver = parse_text('net: "net.prototxt" test_iter: 1 test_iter: 1 test_state { stage: "s" } '
                        'test_state { level: 3 phase: TRAIN }', caffe_pb2.SolverParameter())
    train = solver_nets.train_net(solver, tmp_path)
    assert (train.phase, train.stages, train.level) == (caffe_pb2.TRAIN, (), 1)
    assert [(s.phase, s.stages, s.level) for s in solver_nets.test_nets(solver, tmp_path)] == [
        (caffe_pb2.TEST, ("s",), 1), (caffe_pb2.TRAIN, (), 3)]


def test_cuda_requested_without_a_gpu_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ReplicateError, match="--device cuda"):
        solver_run.pick_device("cuda")
    assert solver_run.pick_device(None, caffe_pb2.SolverParameter.GPU).type == "cpu"


def test_a_device_torch_does_not_know_or_this_machine_lacks_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(ReplicateError, match=r"^--device tpu: not a device; give cpu, cuda or cuda:N$"):
        solver_run.pick_device("tpu")
    with pytest.raises(ReplicateError, match=r"^--device meta: this program runs on cpu or cuda \(cuda:N\)$"):
        solver_run.pick_device("meta")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ReplicateError, match=f"^--device cuda:{count}[: ]"):
        solver_run.pick_device(f"cuda:{count}")
    assert solver_run.pick_device("cpu") == torch.device("cpu")
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 } } }\n')
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "net.prototxt"\nmax_iter: 1\nbase_lr: 0.01\n')
    for argv in (["train", str(solver)], ["test", "--model", str(net), "--iterations", "1"],
                 ["time", "--model", str(net), "--iterations", "1"]):
        assert main([*argv, "--device", "tpu"]) == 2, argv
        assert capsys.readouterr().err == "error: --device tpu: not a device; give cpu, cuda or cuda:N\n", argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.prototxt", "solver.prototxt"]  # train touched nothing


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_rate_and_eta_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    plain = RunLog(None)
    plain.progress(100, 1100, 2.0)  # pytest's stderr is no terminal
    assert capsys.readouterr().err == ""
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    log = RunLog(None)
    log.progress(100, 1100, 2.0)
    assert terminal.getvalue() == "  iter 100/1100  2.00 it/s  ETA 00:08:20 "
    log.info("next line")  # the line goes above, the progress line is drawn again below it
    assert re.fullmatch(r"(  iter 100/1100  2\.00 it/s  ETA 00:08:20 )\r\033\[KI[^\n]*\] next line\n\1",
                        terminal.getvalue())
    log.progress(100, 450000, 3.0)  # 41.6 hours: no wrap at a day
    log.info("later")
    assert terminal.getvalue().endswith("ETA 41:39:27 ")
    log.close()
    assert terminal.getvalue().endswith("\r\033[K")


def test_train_keeps_a_progress_line_in_view_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(E2E, run, ignore=shutil.ignore_patterns("caffe"))
    (run / "solver.prototxt").write_text((run / "solver.prototxt").read_text().replace("max_iter: 20", "max_iter: 3"))
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    solver_run.train(run / "solver.prototxt")
    shown = terminal.getvalue()
    # After a log line the progress line stays on screen until the next log line replaces it.
    assert re.search(r"\] Iteration 2, lr = 0\.05\n  iter 2/3  [\d.]+ it/s  ETA \d\d:\d\d:\d\d \r\033\[K", shown)
    assert "it/s  ETA" not in (run / "train.log").read_text()  # Caffe's lines only in the log


