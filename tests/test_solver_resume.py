"""Exact resume: from any snapshot of ours a run continues bit for bit, with every random stream
of training in use (crops, mirrors, dropout, no random_seed) and epochs that do not divide the
snapshot interval; signals are acted on where Caffe acts on them, mid-test included."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from replicate.errors import ReplicateError
from replicate.data.sources import LmdbSource
from replicate.data.lmdb_io import LmdbReader, write_lmdb
from replicate.io.binary import read_binary
from replicate.layers.data import BatchLayer
from replicate.proto import caffe_pb2
from replicate.results.logs import check_agree, read_log, read_metrics
from replicate.solver.run import train
from solver_support import random_run, same_weights


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def _resumable_copy(run: Path, dest: Path, at: int) -> Path:
    """`run`'s folder as it was right after its snapshot at iteration `at`: later snapshots gone,
    and no logs, so that the resumed run's records are its own."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("train.log", "metrics.jsonl"))
    for path in dest.glob("snap_iter_*"):
        if int(path.name.split("_iter_")[1].split(".")[0]) > at:
            path.unlink()
    return dest


def _same_end(a: Path, b: Path, last: int = 14) -> bool:
    states = [read_binary(run / f"snap_iter_{last}.solverstate", caffe_pb2.SolverState()) for run in (a, b)]
    return same_weights(a / f"snap_iter_{last}.caffemodel", b / f"snap_iter_{last}.caffemodel") and states[0] == states[1]


def test_resume_from_any_snapshot_ends_bit_identical(tmp_path: Path) -> None:
    whole = random_run(tmp_path, "whole")
    train(whole / "solver.prototxt", echo=False)
    assert sorted(int(p.stem.split("_iter_")[1]) for p in whole.glob("*.solverstate")) == [3, 6, 9, 12, 14]
    for at in (3, 6, 9, 12):
        run = _resumable_copy(whole, tmp_path / f"from{at}", at)
        train(run / "solver.prototxt", snapshot=run / f"snap_iter_{at}.solverstate", echo=False)
        assert _same_end(whole, run), f"resumed at {at}: the end differs from the uninterrupted run"
        # The test nets continue where they were too: the same validation numbers after `at`.
        tests = [_records(r, "test") for r in (whole, run)]
        assert tests[1] == [t for t in tests[0] if t["iter"] >= at]
        assert "Resumed data layers (data at batch" in (run / "train.log").read_text()

    # The sidecar is what makes it exact: without it (Caffe's own snapshots have none) the data
    # restart at their first record, as in Caffe, and the log says so.
    run = _resumable_copy(whole, tmp_path / "caffe_like", 6)
    (run / "snap_iter_6.solverstate.resume.json").unlink()
    train(run / "solver.prototxt", snapshot=run / "snap_iter_6.solverstate", echo=False)
    assert not _same_end(whole, run)
    assert ("snap_iter_6.solverstate has no resume sidecar (a snapshot of Caffe's): as in Caffe, the data "
            "layers restart at their first record") in (run / "train.log").read_text()


@pytest.mark.parametrize("tear", ["a cut line", "NUL bytes"])
def test_a_line_the_stopped_run_did_not_finish_is_cut_before_the_resumed_run_appends(tmp_path: Path,
                                                                                       tear: str) -> None:
    """A full disk, or a node that crashed, can leave the last line of train.log and metrics.jsonl
    half written (or NUL bytes, on NFS).  Appended to, that line would break the whole file for
    `results` and `grid status`; the resumed run cuts it and its files read as an unbroken run's."""
    whole = random_run(tmp_path, "whole")
    train(whole / "solver.prototxt", echo=False)
    run = _resumable_copy(whole, tmp_path / "run", 6)
    for name, inside in (("train.log", "Test net output #0: accuracy = "), ("metrics.jsonl", '"outputs": {')):
        text = (whole / name).read_text()
        at = text.index(inside, text.index("Iteration 8, Testing net" if name == "train.log" else '"iter": 8, "net"'))
        kept = text[: at + len(inside) + 2] if tear == "a cut line" else text[: text.rindex("\n", 0, at) + 1]
        (run / name).write_bytes(kept.encode() + (b"\0" * 4096 if tear == "NUL bytes" else b""))
    train(run / "solver.prototxt", snapshot=run / "snap_iter_6.solverstate", echo=False)

    assert _same_end(whole, run)
    log = (run / "train.log").read_text()
    assert "cut the last" in log and "bytes of metrics.jsonl: a line the stopped run did not finish" in log
    assert "\0" not in log and "\0" not in (run / "metrics.jsonl").read_text()
    curves = [(read_log(r / "train.log"), read_metrics(r / "metrics.jsonl")) for r in (whole, run)]
    for log_curve, metrics_curve in curves:
        check_agree(log_curve, metrics_curve)
    assert [c.val for c in curves[0]] == [c.val for c in curves[1]]
    assert [t["iter"] for t in _records(run, "test")] == [t["iter"] for t in _records(whole, "test")] == [0, 4, 8, 12]


def test_a_resume_whose_data_source_changed_since_the_snapshot_is_refused(tmp_path: Path) -> None:
    """The sidecar records what each data layer read (`Source.identity`): continued on another
    source, the run would read other batches than the run it continues, and call it exact."""
    whole = random_run(tmp_path, "whole")
    train(whole / "solver.prototxt", echo=False)
    run = _resumable_copy(whole, tmp_path / "run", 6)
    reader = LmdbReader(run / "train_lmdb")
    records = [(reader.key(i).decode(), reader.datum(i)) for i in range(len(reader) - 1)]  # one fewer
    reader.close()
    shutil.rmtree(run / "train_lmdb")
    write_lmdb(run / "train_lmdb", records)
    with pytest.raises(ReplicateError, match=r"layer 'data' \(Data\): its source changed since the snapshot \(then: "
                                             r"LMDB of 40 records, keys \w+; now: LMDB of 39 records, keys \w+\)"):
        train(run / "solver.prototxt", snapshot=run / "snap_iter_6.solverstate", echo=False)


def test_files_of_different_runs_are_never_loaded_together(tmp_path: Path) -> None:
    a, b = random_run(tmp_path, "a"), random_run(tmp_path, "b")
    for run in (a, b):
        train(run / "solver.prototxt", echo=False)  # two runs: different fillers and seeds
    shutil.copy(b / "snap_iter_6.caffemodel", a / "snap_iter_6.caffemodel")
    with pytest.raises(ReplicateError, match=r"snap_iter_6.solverstate.resume.json: this snapshot's files do not "
                                             r"belong together \(snap_iter_6.caffemodel's content differs"):
        train(a / "solver.prototxt", snapshot=a / "snap_iter_6.solverstate", echo=False)
    shutil.copy(b / "snap_iter_9.solverstate", a / "snap_iter_9.solverstate")
    with pytest.raises(ReplicateError, match="the solverstate's content differs"):
        train(a / "solver.prototxt", snapshot=a / "snap_iter_9.solverstate", echo=False)


def _children() -> list[int]:
    """This process's forked children (its data workers; not the other programs it started)."""
    found, ours = [], Path("/proc/self/cmdline").read_bytes()
    for proc in Path("/proc").iterdir():
        try:
            status, cmdline = (proc / "status").read_text(), (proc / "cmdline").read_bytes()
        except OSError:  # not a process, or one that has just ended
            continue
        if f"\nPPid:\t{os.getpid()}\n" in status and cmdline == ours:
            found.append(int(proc.name))
    return found


def _signal_at_test_batch(monkeypatch: pytest.MonkeyPatch, number: int, signum: int,
                          children: bool = False) -> list[int]:
    """Send `signum` to this process (and to its children, as SLURM signals every process of a
    job) right after the test nets' `number`-th batch (counting from 1 over the run): the test at
    iteration 0 reads batches 1-2, the one at iteration 4 batches 3-4.  Returns (and fills)
    the list of the children signalled."""
    forward: Callable = BatchLayer.forward
    count = 0
    signalled: list[int] = []

    def counting(self: BatchLayer):
        nonlocal count
        out = forward(self)
        if self.phase == caffe_pb2.TEST:
            count += 1
            if count == number:
                signalled.extend(_children() if children else [])
                for pid in signalled:
                    os.kill(pid, signum)
                os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(BatchLayer, "forward", counting)
    return signalled


def test_sighup_mid_test_snapshots_there_and_a_resume_repeats_that_test(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run = random_run(tmp_path, "hup", {"snapshot: 3": "snapshot: 0"})
    with monkeypatch.context() as m:
        _signal_at_test_batch(m, 3, signal.SIGHUP)
        result = train(run / "solver.prototxt", echo=False)
    assert result.iterations == 14 and not result.stopped_early
    log = (run / "train.log").read_text()
    # Caffe's Test checks for requests before each batch: the snapshot comes between the batches.
    assert "Iteration 4, Testing net (#0)" in log.split("Snapshotting to binary proto file snap_iter_4.caffemodel")[0]
    again = _resumable_copy(run, tmp_path / "again", 4)
    train(again / "solver.prototxt", snapshot=again / "snap_iter_4.solverstate", echo=False)
    assert _same_end(run, again)
    tests = [t for t in _records(run, "test") if t["iter"] >= 4]
    assert _records(again, "test") == tests and tests[0]["iter"] == 4


@pytest.mark.parametrize("signum, requeued", [(signal.SIGINT, False), (signal.SIGTERM, True), (signal.SIGUSR2, True)])
def test_stop_mid_test_interrupts_it_snapshots_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    signum: int, requeued: bool) -> None:
    edits = {"snapshot: 3": "snapshot: 5", "stepsize: 8": "stepsize: 8\nrandom_seed: 7"}
    whole = random_run(tmp_path, "whole", edits)
    train(whole / "solver.prototxt", echo=False)
    run = random_run(tmp_path, "stopped", edits)
    with monkeypatch.context() as m:
        _signal_at_test_batch(m, 3, signum)
        result = train(run / "solver.prototxt", echo=False)
    assert (result.iterations, result.stopped_early, result.requeued) == (4, True, requeued)
    log = [line.split("] ", 1)[1] for line in (run / "train.log").read_text().splitlines()]
    end = ["Test interrupted.", "Snapshotting to binary proto file snap_iter_4.caffemodel",
           "Snapshotting solver state to binary proto file snap_iter_4.solverstate"]
    if requeued:
        end.append(f"Stopped by {signal.Signals(signum).name} (requeue) at iteration 4; "
                   f"the job resumes from {run / 'snap_iter_4.solverstate'}")
    assert log[-len(end) - 1:] == [*end, "Optimization stopped early."]
    assert _records(run, "stopped") == [{"kind": "stopped", "iter": 4, "requeue": requeued}]
    assert not _records(run, "done")
    train(run / "solver.prototxt", snapshot=run / "snap_iter_4.solverstate", echo=False)
    assert _same_end(whole, run)
    assert [t for t in _records(run, "test")][1:] == _records(whole, "test")[1:]  # the test at 4 is redone


def test_sigterm_to_every_process_of_a_job_with_data_workers_ends_in_a_snapshot(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM signals the data workers too: they leave stopping to the trainer, which still gets
    its batches, snapshots, and resumes (with workers again) to the end of a run without them."""
    edits = {"snapshot: 3": "snapshot: 5", "stepsize: 8": "stepsize: 8\nrandom_seed: 7"}
    whole = random_run(tmp_path, "whole", edits)
    train(whole / "solver.prototxt", echo=False)
    run = random_run(tmp_path, "workers", edits)
    with monkeypatch.context() as m:
        signalled = _signal_at_test_batch(m, 3, signal.SIGTERM, children=True)
        result = train(run / "solver.prototxt", echo=False, data_workers=2)
    assert (result.iterations, result.requeued, len(signalled)) == (4, True, 2) and not _children()
    train(run / "solver.prototxt", snapshot=run / "snap_iter_4.solverstate", echo=False, data_workers=2)
    assert _same_end(whole, run)


def test_a_test_net_goes_on_from_where_its_last_test_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caffe never rewinds a test net's data layer between tests: with test_iter x batch not a
    multiple of the set (the paper's natural/man-made halves: 1000 x 50 against 27,550 and 22,450
    images), each test reads on from where the last one stopped, wrapping at the end."""
    run = random_run(tmp_path, "run")  # val: 16 records in batches of 6, test_iter 2: 12 a test
    reader = LmdbReader(run / "val_lmdb")
    labels = [int(reader.datum(i).label) for i in range(len(reader))]
    reader.close()
    read: list[list[int]] = []
    forward = BatchLayer.forward

    def recording(self: BatchLayer):
        tops = forward(self)
        source = self.maker.source
        if isinstance(source, LmdbSource) and source.reader.path.name == "val_lmdb":
            read.append(tops[1].reshape(-1).int().tolist())
        return tops

    monkeypatch.setattr(BatchLayer, "forward", recording)
    train(run / "solver.prototxt", echo=False)
    assert len(read) >= 6  # three tests or more: the third starts past the set's end
    assert read == [[labels[(6 * k + i) % 16] for i in range(6)] for k in range(len(read))]


CAFFE_RESUME = Path(__file__).parent / "golden" / "caffe_train_e2e_weights" / "resume"


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_each_solver_type_resumes_from_caffes_own_solverstate(kind: str, tmp_path: Path) -> None:
    """Real Caffe's snap_iter_3 of each solver type (tools/caffe_resume_goldens.py), resumed to
    iteration 6, lands where Caffe's own restore went (relative 1e-5): the history blobs of each
    type are read in Caffe's layout (AdaDelta's and Adam's two per parameter), the lr step from
    the solverstate, and the data starts again from the first record, as Caffe's does."""
    from replicate.io.blobs import blob_to_array
    from replicate.io.model import load_caffemodel
    from solver_support import E2E

    case = CAFFE_RESUME / kind
    run = tmp_path / "run"
    run.mkdir()
    for name in ("train.prototxt", "mean.binaryproto"):
        shutil.copy(E2E / name, run / name)
    shutil.copytree(E2E / "train_lmdb", run / "train_lmdb")
    shutil.copy(case / "solver.prototxt", run / "solver.prototxt")
    train(run / "solver.prototxt", snapshot=str(case / "snap_iter_3.solverstate"), echo=False)
    caffes = np.load(case / "after6.npz")
    layers = load_caffemodel(run / "snap_iter_6.caffemodel").layer
    assert sorted(f"{layer.name}/{i}" for layer in layers for i in range(len(layer.blobs))) == sorted(caffes.files)
    for layer in layers:
        for i, blob in enumerate(layer.blobs):
            ours, theirs = blob_to_array(blob), caffes[f"{layer.name}/{i}"]
            assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max(), f"{kind} {layer.name}/{i}"
