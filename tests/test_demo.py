"""The embedded default end to end, shrunk: every step runs for real on a 4-class dataset."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest

from replicate.cli import main
from replicate.invocation import interpreter


def test_demo_runs_the_whole_pipeline_and_continues_when_run_again(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--classes", "4", "--train-per-class", "12", "--val-per-class", "6",
            "--max-iter", "4", "--jobs", str(os.cpu_count() or 1)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"$ {interpreter()} -m replicate grid run" in printed and "Demo done" in printed
    assert re.findall(r"^== (\S+) ", printed, re.M) == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    report = out / "report" / "report.md"
    assert report.is_file() and (out / "report" / "figure2.png").stat().st_size > 10_000
    text = report.read_text()
    assert "Does the paper's shape show?" in text and "Shapes, not numbers" in text
    with open(out / "report" / "results.csv") as f:
        names = {row["name"] for row in csv.DictReader(f)}
    assert {"half0A", "half0B", "transfer0A0B_1_7", "transfer-ft0A0B_1_1", "nolearn_1_3", "netbase",
            "transfernatmanAB_1_4"} <= names and len(names) == 61
    snapshot = out / "runs" / "transfer0A0B_1_3" / "caffe_imagenet_train_iter_4.caffemodel"
    assert snapshot.is_file()
    # A second run finds everything done and only redraws the report.
    assert main(argv) == 0
    assert "0/61 done" not in capsys.readouterr().out
    # Other settings in the same folder would mix two demos' nets: refused, with what to do.
    with pytest.raises(SystemExit) as stopped:
        main([*argv[:-4], "--max-iter", "6", *argv[-2:]])
    assert stopped.value.code == 2
    printed = capsys.readouterr().err
    assert "exist with other content" in printed and "give another --out" in printed


def test_seed_and_max_iter_make_a_config_of_their_own_with_the_bases_ratio_kept(tmp_path: Path) -> None:
    from replicate.commands.demo import _solver_config
    from replicate.templates import load_solver_config

    assert _solver_config(tmp_path, None, 1) == "demo"  # the shipped config, untouched
    path = _solver_config(tmp_path, 10, 7)
    others, bases = load_solver_config(path), load_solver_config(path, for_base=True)
    assert ("random_seed", "7") in others.fields and ("random_seed", "7") in bases.fields
    assert (others.max_iter, bases.max_iter) == (10, 30)  # the bases keep three times the iterations
    assert ("stepsize", "7") in others.fields and ("stepsize", "21") in bases.fields


def test_long_gives_every_net_the_same_schedule_on_four_times_the_images(tmp_path: Path) -> None:
    """`demo --long`: the paper's protocol (one schedule for every net) on 160 images a class,
    in a folder of its own so that it never continues a default demo's runs."""
    from replicate.cli import build_parser
    from replicate.commands.demo import _solver_config, chosen
    from replicate.templates import load_solver_config

    def parsed(*argv: str):
        return build_parser(["demo", *argv]).parse_args(["demo", *argv])

    profile, out, per_class = chosen(parsed("--long"))
    assert (profile.solver_config, str(out), per_class) == ("demo_long", "demo_long_runs", 160)
    profile, out, per_class = chosen(parsed())
    assert (profile.solver_config, str(out), per_class) == ("demo", "demo_runs", 40)
    _, out, per_class = chosen(parsed("--long", "--out", str(tmp_path), "--train-per-class", "12"))
    assert (out, per_class) == (tmp_path, 12)
    assert _solver_config(tmp_path, None, 1, "demo_long") == "demo_long"
    others, bases = load_solver_config("demo_long"), load_solver_config("demo_long", for_base=True)
    assert others.max_iter == bases.max_iter == 3000 and others.fields == bases.fields
    scaled = _solver_config(tmp_path, 300, 5, "demo_long")
    assert load_solver_config(scaled).max_iter == load_solver_config(scaled, for_base=True).max_iter == 300


def test_a_config_of_other_settings_never_overwrites_the_one_the_nets_were_made_from(tmp_path: Path) -> None:
    """The nets in a demo folder name their solver config's file; a rerun with other settings,
    which `generate` then refuses, must leave that file as the nets were made from it."""
    from replicate.commands.demo import _solver_config

    first = Path(_solver_config(tmp_path, 10, 7))
    made = first.read_bytes()
    assert Path(_solver_config(tmp_path, 12, 7)) != first and Path(_solver_config(tmp_path, None, 8)) != first
    assert first.read_bytes() == made
    assert _solver_config(tmp_path, 10, 7) == str(first)  # the same settings: the same file, rewritten alike
