"""Caffe logs in, validation curves out: both formats, gzip, metrics.jsonl, and bad logs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from replicate.results.logs import (FORMAT_2014, FORMAT_METRICS, FORMAT_MODERN, LogError,
                                    check_agree, merge_segments, parse_lines, parse_segments,
                                    read_log, read_metrics)
from results_support import load_curves, log_2014, log_modern, write_gz

GOLDEN_LOG = Path(__file__).parent / "golden" / "caffe_train_e2e" / "caffe" / "train.log"
CURVES = load_curves()


@pytest.mark.parametrize("name", ["half0A", "transfer0A0A_1_1", "transfer2B2A_1_4"])
def test_2014_log_gives_the_authors_curve(tmp_path: Path, name: str) -> None:
    points = CURVES[name]
    path = write_gz(tmp_path / f"{name}.log.gz", log_2014(name, points, max_iter=450000))
    curve = read_log(path)
    assert curve.format == FORMAT_2014
    assert [(p.iter, p.top1, p.loss) for p in curve.val] == [
        (i, float(t), float(l)) for i, t, l in points]
    assert curve.done
    # display 20 over 450k iterations: loss and lr lines merged per iteration
    assert len(curve.train) == 450000 // 20
    assert curve.train[0].iter == 20 and curve.train[0].lr == 0.01
    assert curve.train[-1].lr == pytest.approx(0.01 * 0.1 ** 4)


def test_plain_and_gzip_read_the_same(tmp_path: Path) -> None:
    text = log_2014("half1B", CURVES["half1B"][:30])
    plain = tmp_path / "a.log"
    plain.write_text(text)
    gz = write_gz(tmp_path / "b.log", text)  # gzip recognised by content, not by name
    assert read_log(plain).val == read_log(gz).val
    assert len(read_log(plain).val) == 30


def test_real_modern_caffe_log() -> None:
    """The log BVLC Caffe itself wrote (tests/golden/caffe_train_e2e)."""
    curve = read_log(GOLDEN_LOG)
    assert curve.format == FORMAT_MODERN
    assert [p.iter for p in curve.val] == [0, 5, 10, 15, 20]
    assert (curve.val[0].top1, curve.val[0].loss) == (0.1875, 1.85397)
    assert (curve.val[1].top1, curve.val[1].loss) == (0.125, 1.60904)
    assert curve.train[0].iter == 0 and curve.train[0].loss == 1.73516
    assert curve.train[0].lr == 0.05
    assert [t.lr for t in curve.train if t.iter == 8] == [0.005]


def test_modern_log_with_speed_in_training_lines_and_no_loss_output() -> None:
    points = [(100, 0.1, None), (200, 0.25, None), (300, 0.3, None)]
    curve = parse_lines(log_modern(points, initial=(0.05, None)).splitlines(), "m.log")
    assert [(p.iter, p.top1, p.loss) for p in curve.val] == [(0, 0.05, None)] + points
    assert curve.train[1].iter == 20 and curve.train[1].loss == 2.5
    assert curve.done


def test_resumed_run_replaces_repeated_iterations() -> None:
    first = log_modern([(100, 0.1, 3.0), (200, 0.2, 2.5), (300, 0.3, 2.0)])
    second = log_modern([(200, 0.22, 2.4), (300, 0.33, 1.9), (400, 0.4, 1.8)], initial=None)
    # the resumed run tests again at its snapshot's iteration (200) and goes on
    lines = first.splitlines() + second.splitlines()
    curve = parse_lines(lines, "resumed.log")
    assert [(p.iter, p.top1) for p in curve.val] == [(0, 0.001), (100, 0.1), (200, 0.22),
                                                     (300, 0.33), (400, 0.4)]


def test_test_net_1_is_ignored() -> None:
    text = log_modern([(100, 0.1, 3.0)])
    extra = ("I1124 10:00:00.000000 1 solver.cpp:346] Iteration 100, Testing net (#1)\n"
             "I1124 10:00:00.000000 1 solver.cpp:413]     Test net output #0: accuracy = 0.9\n")
    curve = parse_lines((text + extra).splitlines(), "two_nets.log")
    assert [p.top1 for p in curve.val] == [0.001, 0.1]


def _metrics(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_metrics_jsonl_and_agreement_with_train_log(tmp_path: Path) -> None:
    points = [(100, 0.123456789, 2.3456789), (200, 0.2, 2.0)]
    records = [{"iter": 0, "kind": "test", "net": 0, "outputs": {"accuracy": 0.001, "loss": 6.9}},
               {"iter": 20, "kind": "train", "lr": 0.01, "loss": 2.5}]
    records += [{"iter": i, "kind": "test", "net": 0, "outputs": {"accuracy": t, "loss": l}}
                for i, t, l in points]
    records += [{"iter": 200, "kind": "test", "net": 1, "outputs": {"accuracy": 0.9}},
                {"kind": "done", "iter": 200}]
    metrics = read_metrics(_metrics(tmp_path / "metrics.jsonl", records))
    assert metrics.format == FORMAT_METRICS and metrics.done
    assert [(p.iter, p.top1, p.loss) for p in metrics.val] == [(0, 0.001, 6.9)] + points
    log = parse_lines(log_modern(points).splitlines(), "train.log")
    check_agree(log, metrics)  # glog's 6 digits against full precision
    records[2]["outputs"]["accuracy"] = 0.124
    other = read_metrics(_metrics(tmp_path / "m2.jsonl", records))
    with pytest.raises(LogError, match="iteration 100"):
        check_agree(log, other)
    fewer = read_metrics(_metrics(tmp_path / "m3.jsonl", records[:3]))
    with pytest.raises(LogError, match="other iterations"):
        check_agree(log, fewer)


def test_several_logs_of_one_run_merge(tmp_path: Path) -> None:
    a = parse_segments(log_modern([(100, 0.1, 3.0), (200, 0.2, 2.0)]).splitlines(), "a")
    b = parse_segments(log_modern([(200, 0.25, 1.9), (300, 0.3, 1.8)], initial=None,
                                  date="1125").splitlines(), "b")
    merged = merge_segments(b + a, "run")
    assert [(p.iter, p.top1) for p in merged.val] == [(0, 0.001), (100, 0.1), (200, 0.25), (300, 0.3)]


CORRUPT = {
    "testing line without its scores": (
        lambda t: t.replace("solver.cpp:123] Test score #0: 0.11168\n", "", 1)
                   .replace("solver.cpp:123] Test score #1: 4.52266\n", "", 1),
        "test at iteration 2000 .* has no scores"),
    "truncated mid-test": (lambda t: t[: t.index("Iteration 3000, Testing net") + 28],
                           "truncated: the log ends inside the test at iteration 3000 .* no scores"),
    "truncated after the first score": (
        lambda t: t[: t.rindex("\n", 0, t.index("Test score #1: 3.6469")) + 1],
        "truncated: .* iteration 4000 .* expected Test score #0 and #1, found #0"),
    # A last line without its newline was never finished: "3." is not read as a loss of 3.0.
    "last line never finished": (
        lambda t: t[: t.index("Test score #1: 3.6469") + len("Test score #1: 3.")],
        "truncated: .* iteration 4000 .* line \\d+ was never finished"),
    "2014 and modern tests mixed": (
        lambda t: t.replace("Iteration 2000, Testing net", "Iteration 2000, Testing net (#0)")
                   .replace("Test score #0: 0.11168", "Test net output #0: accuracy = 0.11168")
                   .replace("Test score #1: 4.52266", "Test net output #1: loss = 4.52266"),
        "mixes 2014"),
    "half a test (score #1 missing)": (
        lambda t: t.replace("solver.cpp:123] Test score #1: 4.52266\n", "", 1),
        "expected Test score #0 and #1, found #0"),
    "garbage bytes": (lambda t: t[:4000] + "\x00\x17\x00garbage\n" + t[4000:],
                      "binary data, not a text log"),
    "bad number": (lambda t: t.replace("Test score #0: 0.11168", "Test score #0: 0.1x168"),
                   "'0.1x168' is not a number"),
    "accuracy above 1": (lambda t: t.replace("Test score #0: 0.11168", "Test score #0: 11.168"),
                         "outside \\[0, 1\\]"),
    "no validation points": (lambda t: "\n".join(l for l in t.splitlines() if "Test" not in l),
                             "no validation points"),
    "score outside a test": (lambda t: t.replace("Iteration 2000, Testing net", "Iteration 2000, x"),
                             "a test score outside a 2014-style test"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_logs_raise_with_reason(tmp_path: Path, case: str) -> None:
    text = log_2014("half0A", CURVES["half0A"][:5])
    edit, reason = CORRUPT[case]
    path = write_gz(tmp_path / "half0A.log.gz", edit(text))
    with pytest.raises(LogError, match=reason) as err:
        read_log(path)
    assert err.value.path == str(path)


def test_gzip_that_fails_midway(tmp_path: Path) -> None:
    data = gzip.compress(log_2014("half0A", CURVES["half0A"][:40]).encode())
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(LogError, match="gzip data broken after line"):
        read_log(cut)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flipped.log.gz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(LogError):
        read_log(bad)


def test_corrupt_metrics_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iter": 100, "kind": "test", "net": 0, "outputs": {"accuracy": 0.1}}\n'
                    '{"iter": 200, "kind": "te\n'
                    '{"iter": 300, "kind": "test", "net": 0, "outputs": {"accuracy": 0.2}}\n')
    with pytest.raises(LogError, match="line 2: not a metrics record"):
        read_metrics(path)


def test_a_train_line_the_run_did_not_finish_is_left_out_and_the_tests_before_it_kept(tmp_path: Path) -> None:
    lines = log_modern([(100, 0.1, 3.0), (200, 0.2, 2.0)]).splitlines(keepends=True)
    assert "Optimization Done" in lines[-1] and "Test net output #1" in lines[-2]
    train_line = next(line for line in lines if ", loss = 2.5" in line)
    path = tmp_path / "train.log"
    path.write_text("".join(lines[:-1]) + train_line[:-3])  # the test at 200 is still open: "loss = 2"
    whole = tmp_path / "whole.log"
    whole.write_text("".join(lines[:-1]))
    curve = read_log(path)
    assert [(p.iter, p.top1, p.loss) for p in curve.val] == [(0, 0.001, 6.9), (100, 0.1, 3.0), (200, 0.2, 2.0)]
    assert (curve.val, curve.train, curve.left_out) == (read_log(whole).val, read_log(whole).train, [])


_DONE = '{"kind": "test", "iter": 100, "net": 0, "outputs": {"accuracy": 0.1, "loss": 2.0}}\n'


@pytest.mark.parametrize("last, lost", [
    ('{"kind": "train", "iter": 120, "lr": 0.01, "lo', None),
    ('{"kind": "test", "iter": 200, "net": 1, "outputs": {"acc', None),
    ('{"kind": "test", "iter": 200, "net": 0, "outputs": {"accuracy": 0.2', "iteration 200 .* line 2 was never finished"),
    ('{"kind": "test", "iter": 200, "ne', "iteration 200 .* line 2 was never finished"),
    ('{"kind": "te', "line 2 was never finished, and too little of it"),
    ("\x00" * 300, "line 2 was never finished, and too little of it"),  # what an NFS client crash leaves
])
def test_a_metrics_record_the_run_did_not_finish(tmp_path: Path, last: str, lost: str | None) -> None:
    """A last record without its newline adds nothing; if it may be a test of net #0, the run lost
    that test, as when a log ends inside one."""
    path = tmp_path / "metrics.jsonl"
    path.write_text(_DONE + last)
    if lost is None:
        assert [(p.iter, p.top1) for p in read_metrics(path).val] == [(100, 0.1)]
    else:
        with pytest.raises(LogError, match=lost):
            read_metrics(path)


def test_top1_found_among_other_output_names() -> None:
    def block(outputs: str) -> list[str]:
        return ["I1124 10:00:00.000000 1 solver.cpp:346] Iteration 100, Testing net (#0)"] + [
            f"I1124 10:00:00.000000 1 solver.cpp:413]     Test net output #{i}: {o}"
            for i, o in enumerate(outputs.split(";"))]
    curve = parse_lines(block("acc/top-5 = 0.7;acc/top-1 = 0.4;xent = 2 (* 1 = 2 loss)"), "a")
    assert (curve.val[0].top1, curve.val[0].loss) == (0.4, 2.0)
    with pytest.raises(LogError, match="no single top-1 accuracy"):
        parse_lines(block("acc_a = 0.1;acc_b = 0.2"), "b")
