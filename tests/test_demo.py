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
    assert f"$ {interpreter()} -m replicate grid run" in printed
    assert f"$ {interpreter()} -m replicate generate --all --grid demo" in printed
    assert re.findall(r"^== (\S+) ", printed, re.M) == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    # It ends with the findings on one screen: the claims table, the figures' and the report's paths.
    ending = printed[printed.index("The paper's claims on these runs"):].splitlines()
    assert len(ending) <= 24 and ending[-1].startswith("Demo done in")
    assert [line.split()[0] for line in ending[2:8]] == ["BnB+", "BnB", "AnB", "AnB+", "random", "dissimilar"]
    assert ending[1].split() == ["claim", "paper", "ours", "(95%", "bounds)", "holds"]
    assert "of the paper's 6 claims hold on these runs" in ending[8]
    report = out / "report"
    assert f"Figure 2: {report / 'figure2.png'}" in ending and f"Figure 3: {report / 'figure3.png'}" in ending
    assert any(line.startswith(f"Report:   {report / 'report.md'} ") for line in ending)
    report = out / "report" / "report.md"
    assert report.is_file() and (out / "report" / "figure2.png").stat().st_size > 10_000
    text = report.read_text()
    assert "Does the paper's shape show?" in text and "Shapes, not numbers" in text
    assert "Weights not copied" not in text  # every transfer net started from its manifest's weights, whole
    with open(out / "report" / "results.csv") as f:
        names = {row["name"] for row in csv.DictReader(f)}
    assert {"half0A", "half0B", "transfer0A0B_1_7", "transfer-ft0A0B_1_1", "nolearn_1_3", "netbase",
            "transfernatmanBA_1_4"} <= names and len(names) == 41
    snapshot = out / "runs" / "transfer0A0B_1_3" / "caffe_imagenet_train_iter_4.caffemodel"
    assert snapshot.is_file()
    # A second run finds everything done and only redraws the report.
    assert main(argv) == 0
    assert "0/41 done" not in capsys.readouterr().out
    # Other settings in the same folder would mix two demos' nets: refused, with what to do.
    with pytest.raises(SystemExit) as stopped:
        main([*argv[:-4], "--max-iter", "6", *argv[-2:]])
    assert stopped.value.code == 2
    printed = capsys.readouterr().err
    assert "exist with other content" in printed and "give another --out" in printed


def test_seed_and_max_iter_make_a_config_of_their_own_with_one_schedule_for_every_net(tmp_path: Path) -> None:
    from replicate.commands.demo import _solver_config
    from replicate.templates import load_solver_config

    assert _solver_config(tmp_path, None, 1) == "demo"  # the shipped config, untouched
    others, bases = load_solver_config("demo"), load_solver_config("demo", for_base=True)
    assert others.max_iter == bases.max_iter == 3000 and others.fields == bases.fields  # as in the paper
    path = _solver_config(tmp_path, 300, 7)
    others, bases = load_solver_config(path), load_solver_config(path, for_base=True)
    assert ("random_seed", "7") in others.fields and others.fields == bases.fields
    assert others.max_iter == 300 and ("stepsize", "210") in others.fields and ("test_interval", "12") in others.fields


def test_the_default_trains_the_demo_grid_and_long_every_net_of_its_splits(tmp_path: Path) -> None:
    """Both profiles: the same data (160 images a class) and schedule; `--long` adds the other
    directions and every n of the fine-tuned nets, in a folder of its own so that it never
    continues a default demo's runs."""
    from replicate.cli import build_parser
    from replicate.commands.demo import chosen
    from replicate.experiments.plan import grid_specs

    def parsed(*argv: str):
        return build_parser(["demo", *argv]).parse_args(["demo", *argv])

    default, long = parsed(), parsed("--long")
    assert default.train_per_class == long.train_per_class == 160
    profile, out = chosen(default)
    assert (profile.nets, str(out)) == (("--grid", "demo"), "demo_runs")
    profile, out = chosen(long)
    assert str(out) == "demo_long_runs"
    assert chosen(parsed("--long", "--out", str(tmp_path)))[1] == tmp_path
    splits, treatments = profile.nets[1].split(","), profile.nets[3].split(",")
    assert profile.nets[::2] == ("--splits", "--treatments")
    demo, every = {s.name for s in grid_specs("demo")}, {s.name for s in grid_specs("paper", splits, treatments)}
    assert len(demo) == 41 and len(every) == 61 and demo < every


def test_the_demo_grid_gives_every_claim_and_figure_the_nets_it_needs() -> None:
    """Each of the report's six claims is judged on the demo grid's nets, with a spread (two or
    more nets a group), and Figure 2 has every treatment at both ends, n = 1 and 7; dropping a net
    a claim needs fails here, not after a 10-minute run."""
    from replicate.results.groups import by_treatment, transfer_gaps
    from replicate.results.shape import shape_checks
    from replicate.treatments import demo_grid

    names = [s.name for s in demo_grid()]
    scores = {name: 0.5 + 0.001 * i for i, name in enumerate(names)}  # any spread will do
    checks = shape_checks(scores)
    assert len(checks) == 6 and all(c.estimate is not None and c.estimate.bounded for c in checks), \
        [c.claim for c in checks if c.estimate is None or not c.estimate.bounded]
    groups = by_treatment(scores)
    for treatment in ("BnB", "BnB+", "AnB", "AnB+"):
        assert {1, 7} <= {n for t, n in groups if t == treatment}, treatment
    for treatment in ("BnB", "AnB"):  # the frozen curves at every n: the BnB dip rule needs 3..6
        assert {n for t, n in groups if t == treatment} == set(range(1, 8)), treatment
    gaps = transfer_gaps(scores, True)
    assert all(set(gaps[key]) == set(range(1, 8)) for key in ("similar", "dissimilar", "random"))


def test_a_config_of_other_settings_never_overwrites_the_one_the_nets_were_made_from(tmp_path: Path) -> None:
    """The nets in a demo folder name their solver config's file; a rerun with other settings,
    which `generate` then refuses, must leave that file as the nets were made from it."""
    from replicate.commands.demo import _solver_config

    first = Path(_solver_config(tmp_path, 10, 7))
    made = first.read_bytes()
    assert Path(_solver_config(tmp_path, 12, 7)) != first and Path(_solver_config(tmp_path, None, 8)) != first
    assert first.read_bytes() == made
    assert _solver_config(tmp_path, 10, 7) == str(first)  # the same settings: the same file, rewritten alike


def test_a_bad_max_iter_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--max-iter", "0"]) == 2
    assert capsys.readouterr().err == "error: --max-iter must be at least 1\n"
    assert not (tmp_path / "demo").exists()
