"""A whole `caffe train` run reproduced: Caffe's own snapshot resumed to Caffe's next snapshot.

Note on the fixture: its README says Caffe ran with `-weights init.caffemodel`, but Caffe's log
has no "Finetuning from" line and its frozen conv1 in snap_iter_10 differs from init.caffemodel
(its bias is the constant filler's 0), so Caffe trained from its own random fillers and the first
ten iterations cannot be replayed.  Resuming from Caffe's snap_iter_10.solverstate can, and it
exercises everything: solverstate restore, Data layers with mean file and scale, a frozen conv,
LRN, a grouped conv, step lr policy across a boundary, momentum, weight decay, testing, the final
snapshot, and the log lines.  The fixture `caffe_train_e2e_weights` is the same run made again
with the weights really loaded, so there the whole run is replayed from iteration 0.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from replicate.io.binary import read_binary
from replicate.io.blobs import blob_to_array
from replicate.io.model import load_caffemodel, save_caffemodel
from replicate.proto import caffe_pb2
from replicate.results.logs import read_log
from replicate.solver.run import train
from solver_support import E2E, E2E_WEIGHTS, NO_TESTS, copy_run, logged_numbers, masked_values, params, solver_lines

@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return copy_run(tmp_path, "run")


def test_resume_from_caffes_snapshot_reaches_caffes_next_snapshot(run_dir: Path) -> None:
    result = train(run_dir / "solver.prototxt", snapshot=E2E / "caffe" / "snap_iter_10.solverstate", echo=False)
    assert result.iterations == 20
    # Every loss, lr and test output Caffe logged from iteration 10 on, digit for digit.
    ours = logged_numbers(run_dir / "train.log", 10)
    caffes = logged_numbers(E2E / "caffe" / "train.log", 10)
    assert ours == caffes and len(caffes) > 25
    # The final snapshot's parameters within relative 1e-5, and its history.
    mine, theirs = params(run_dir / "snap_iter_20.caffemodel"), params(E2E / "caffe" / "snap_iter_20.caffemodel")
    assert mine.keys() == theirs.keys()
    for layer in theirs:
        for a, b in zip(mine[layer], theirs[layer], strict=True):
            assert a.shape == b.shape
            assert np.abs(a - b).max() <= 1e-5 * max(np.abs(b).max(), 1e-30), layer
    _same_history(run_dir / "snap_iter_20.solverstate", E2E / "caffe" / "snap_iter_20.solverstate", 20)


def _same_history(ours: Path, caffes: Path, iteration: int) -> None:
    """A .solverstate of ours against Caffe's: the iteration, lr step and learned net, and every
    history blob within relative 1e-5 (as the weights)."""
    state = read_binary(ours, caffe_pb2.SolverState())
    caffe_state = read_binary(caffes, caffe_pb2.SolverState())
    assert (state.iter, state.current_step, state.learned_net) == (
        iteration, caffe_state.current_step, f"snap_iter_{iteration}.caffemodel")
    assert caffe_state.iter == iteration and len(caffe_state.history) > 0
    for h, g in zip(state.history, caffe_state.history, strict=True):
        a, b = blob_to_array(h), blob_to_array(g)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-5 * max(np.abs(b).max(), 1e-30)


def test_snapshots_are_caffes_snapshots_but_for_the_values_of_their_blobs(run_dir: Path) -> None:
    """The net a snapshot writes is Caffe's, field for field: the layers as the prototxt gives
    them (its data source and mean file names too, though this run read them against its own
    folder), the phase, the SoftmaxWithLoss's loss_weight 1, each blob's shape; and so is its
    .solverstate."""
    train(run_dir / "solver.prototxt", snapshot=E2E / "caffe" / "snap_iter_10.solverstate", echo=False)
    ours = read_binary(run_dir / "snap_iter_20.caffemodel", caffe_pb2.NetParameter())
    caffes = read_binary(E2E / "caffe" / "snap_iter_20.caffemodel", caffe_pb2.NetParameter())
    for net in (ours, caffes):
        for layer in net.layer:
            for blob in layer.blobs:
                blob.ClearField("data")
    assert ours == caffes
    states = [read_binary(folder / "snap_iter_20.solverstate", caffe_pb2.SolverState())
              for folder in (run_dir, E2E / "caffe")]
    for state in states:  # iter, learned_net, current_step, each history blob's shape
        for blob in state.history:
            blob.ClearField("data")
    assert states[0] == states[1]


def test_from_scratch_run_logs_parse_and_write_snapshots(run_dir: Path) -> None:
    train(run_dir / "solver.prototxt", weights=str(run_dir / "init.caffemodel"), echo=False)
    assert (run_dir / "snap_iter_10.caffemodel").is_file() and (run_dir / "snap_iter_20.solverstate").is_file()
    curve = read_log(run_dir / "train.log")
    assert [p.iter for p in curve.val] == [0, 5, 10, 15, 20]
    # Frozen conv1 keeps exactly the weights it was given.
    init, final = params(run_dir / "init.caffemodel"), params(run_dir / "snap_iter_20.caffemodel")
    np.testing.assert_array_equal(init["conv1"][0], final["conv1"][0])
    assert not np.array_equal(init["fc-new"][0], final["fc-new"][0])
    records = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert '"kind": "done"' in records[-1]


def test_weights_copy_by_layer_name_logs_copied_and_ignored_layers(run_dir: Path) -> None:
    # A base net whose classifier has another name (the paper's fc8 -> fc8-new transfer rule).
    renamed = load_caffemodel(run_dir / "init.caffemodel")
    for layer in renamed.layer:
        if layer.name == "fc-new":
            layer.name = "fc8"
    save_caffemodel(run_dir / "base.caffemodel", renamed)
    edits = (run_dir / "solver.prototxt").read_text().replace("max_iter: 20", "max_iter: 1")
    for old, new in NO_TESTS.items():
        edits = edits.replace(old, new)
    (run_dir / "solver.prototxt").write_text(edits)
    # Comma-separated: later files overwrite earlier ones layer by layer, as in Caffe.
    train(run_dir / "solver.prototxt", weights=f"{run_dir / 'init.caffemodel'},{run_dir / 'base.caffemodel'}", echo=False)
    log = (run_dir / "train.log").read_text()
    assert log.count("Copying source layer fc-new") == 1 and "Ignoring source layer fc8" in log
    assert log.count("Copying source layer conv2-new") == 2


def _skeleton(log: Path) -> list[str]:
    """Caffe's solver lines from the first test on, as `source] message`, with loss and accuracy
    values masked (they depend on the initial weights) but iterations, lr values, output names,
    loss weights, snapshot names and the order of every phase kept."""
    found = (re.search(r"\S+:\d+\] .*$", line) for line in log.read_text().splitlines())
    lines = [m.group(0) for m in found if m]
    start = next(i for i, line in enumerate(lines) if "Testing net" in line)
    out = []
    for line in lines[start:]:
        line = re.sub(r" \([^)]*iter/s[^)]*\)", "", line)
        line = re.sub(r"(loss|accuracy) = \S+", r"\1 = #", line)
        out.append(re.sub(r"\(\* (\S+) = \S+ loss\)", r"(* \1 = # loss)", line))
    return out


def test_from_scratch_run_logs_every_phase_as_caffe_did(run_dir: Path) -> None:
    # The fixture's Caffe run did not start from init.caffemodel (see the module docstring), so
    # its loss values cannot be replayed from iteration 0; the structure of its log can.
    train(run_dir / "solver.prototxt", weights=str(run_dir / "init.caffemodel"), echo=False)
    ours, caffes = _skeleton(run_dir / "train.log"), _skeleton(E2E / "caffe" / "train.log")
    assert ours == caffes[:-1] and caffes[-1].endswith("] Optimization Done.")


def test_from_init_weights_replays_caffes_whole_run(run_dir: Path) -> None:
    """The same run made again with `-weights init.caffemodel` really loaded (see that fixture's
    README): from iteration 0, every loss, lr and test output Caffe logged, and both snapshots."""
    train(run_dir / "solver.prototxt", weights=str(run_dir / "init.caffemodel"), echo=False)
    ours, caffes = logged_numbers(run_dir / "train.log", 0), logged_numbers(E2E_WEIGHTS / "train.log", 0)
    (our_lines, our_values), (caffe_lines, caffe_values) = masked_values(ours), masked_values(caffes)
    assert our_lines == caffe_lines and len(caffe_values) > 60
    # Caffe prints 6 significant digits: equal within one unit of the sixth.
    np.testing.assert_allclose(our_values, caffe_values, rtol=1e-5, atol=1e-6)
    init = params(run_dir / "init.caffemodel")
    for it in (10, 20):
        mine, theirs = params(run_dir / f"snap_iter_{it}.caffemodel"), params(E2E_WEIGHTS / f"snap_iter_{it}.caffemodel")
        assert mine.keys() == theirs.keys()
        np.testing.assert_array_equal(theirs["conv1"][0], init["conv1"][0])  # Caffe loaded them this time
        for layer in theirs:
            for a, b in zip(mine[layer], theirs[layer], strict=True):
                assert np.abs(a - b).max() <= 1e-5 * max(np.abs(b).max(), 1e-30), (it, layer)
        _same_history(run_dir / f"snap_iter_{it}.solverstate", E2E_WEIGHTS / f"snap_iter_{it}.solverstate", it)


LOGS = E2E_WEIGHTS.parent / "logs"
@pytest.mark.parametrize("case", sorted(p.name for p in LOGS.iterdir()))
def test_the_log_of_a_random_solver_is_caffes(case: str, tmp_path: Path) -> None:
    """Solvers of tools/caffe_fuzz_log.py that real Caffe trained from init.caffemodel: the same
    lines in the same order (losses, average_loss's smoothed loss, rates, each test net's outputs,
    `MultiStep Status`, `Gradient clipping`), each number within the bound the whole-run replay
    above uses (rtol 1e-5, atol 1e-6: Caffe prints 6 digits, sums a clip's squared gradients in
    float where we sum in double, and another CPU's summation order moves a trained loss by a few
    units of 1e-7); on this project's machine all three are within one unit of the last digit."""
    run = copy_run(tmp_path, "run")
    (run / "solver.prototxt").write_text((LOGS / case / "solver.prototxt").read_text())
    for i in range(2):  # each test net over its own LMDB, as in Caffe's run
        shutil.copytree(run / "val_lmdb", run / f"val{i}_lmdb")
        (run / f"val{i}.prototxt").write_text((run / "val.prototxt").read_text().replace('"val_lmdb"', f'"val{i}_lmdb"'))
    train(run / "solver.prototxt", weights=str(run / "init.caffemodel"), echo=False)
    ours, caffes = solver_lines((run / "train.log").read_text()), (LOGS / case / "caffe.log").read_text().splitlines()
    (shape, values), (caffe_shape, caffe_values) = masked_values(ours), masked_values(caffes)
    assert shape == caffe_shape
    np.testing.assert_allclose(values, caffe_values, rtol=1e-5, atol=1e-6)
