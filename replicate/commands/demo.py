"""The embedded default: the paper's whole pipeline, scaled to minutes on a CPU.

Generates a 40-class ImageNet-like dataset (natural textures vs man-made shapes), cuts it into
the paper's datasets (a random A/B split and the natural/man-made split) as views of one store with
their means (`data prepare`), generates the paper's treatments for a scaled CaffeNet (base A/B, BnB, BnB+, AnB,
AnB+ both ways, random frozen layers n = 1..7, natural/man-made transfer), trains them all with
Caffe's solver semantics, and writes the report with the paper's figures and Table 1 beside
ours.  Every step is one of this program's own commands, printed as it runs; running the demo
again continues where it stopped.

  python -m replicate demo                 # into demo_runs/
  python -m replicate demo --long          # into demo_long_runs/: 4x the images, equal schedules

The default trains the base nets three times as long as the others (solver config `demo`):
minutes, and 4 of the paper's 6 claims.  `--long` gives every net the same 3,000 iterations on 160
images a class (`demo_long`), as the paper gave every net the same schedule: 2.6 times the
iterations, and the AnB+ boost shows too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replicate import cli
from replicate.invocation import command
from replicate.templates import SOLVER_CONFIG_DIR, load_arch

#: The demo's datasets: the random split 0, the natural/man-made split, and the whole set
#: (random-frozen nets train on all classes, as the authors' nolearn nets did).
SETS = ("half0A", "half0B", "halfnatmanA", "halfnatmanB", "whole")
TREATMENTS = "base,BnB,BnB+,AnB,AnB+,random,whole"
#: Side of the generated images: what the demo architecture crops from.
SIZE = load_arch("demo").params["input"]["stored_size"]
#: The seed of the demo's reported run (results/demo/): the solver config's random_seed.
DEFAULT_SEED = 1


@dataclass(frozen=True)
class Profile:
    """What `--long` changes: the solver config, the training images a class, the folder."""

    solver_config: str
    train_per_class: int
    out: str


PROFILES = {False: Profile("demo", 40, "demo_runs"), True: Profile("demo_long", 160, "demo_long_runs")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--long", action="store_true",
                        help="the longer profile: every net 3,000 iterations on 160 training images a class "
                             "(solver config demo_long; 2.6 times the default's iterations), where the bases "
                             "are near their plateau before anything copies them and the AnB+ boost shows")
    parser.add_argument("--out", help="folder for everything (default demo_runs, or demo_long_runs with --long)")
    parser.add_argument("--classes", type=int, default=40, help="classes of the generated dataset (default 40)")
    parser.add_argument("--train-per-class", type=int,
                        help="training images per class (default 40, or 160 with --long)")
    parser.add_argument("--val-per-class", type=int, default=25, help="validation images per class (default 25)")
    parser.add_argument("--max-iter", type=int,
                        help="iterations per transfer net (default: the solver config's, 1000 or 3000 with "
                             "--long); the base nets' schedule, the step, test and snapshot intervals scale "
                             "with it")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the generated images and of every net's solver (fillers, "
                             "crops, mirrors, dropout); default %(default)s")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="nets trained at once (default: one per core)")


def _step(title: str, argv: list[str], hint: str = "") -> None:
    """Run one command as the user could type it; stop the demo with its exit status (and
    `hint`, what to do about it) if it fails."""
    print(f"\n== {title}\n$ {command(*argv)}", flush=True)
    started = time.perf_counter()
    code = cli.main(argv)
    if code != 0:
        if hint:
            print(f"demo: {hint}", file=sys.stderr)
        raise SystemExit(code)
    print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)


def _scaled(solver: dict[str, Any], scale: float) -> None:
    """`solver`'s iteration counts (those it sets) times `scale`, each at least 1."""
    for key in ("max_iter", "snapshot", "stepsize", "test_interval", "display"):
        if key in solver:
            solver[key] = max(1, round(solver[key] * scale))


def _solver_config(out: Path, max_iter: int | None, seed: int, name: str = "demo") -> str:
    """The shipped solver config `name`, or a copy of it with `seed` as its random_seed and,
    with `max_iter`, scaled so that the transfer nets train that many iterations (the base nets
    keep their ratio to them).  The copy is named by its settings (demo_seed2_iter500.json): one
    of other settings never overwrites the file that the nets already in `out` were made from."""
    config = json.loads((SOLVER_CONFIG_DIR / f"{name}.json").read_text())
    solver = config["solver"]
    if max_iter is None and seed == solver["random_seed"]:
        return name
    changes = [f"random_seed {seed}"]
    solver["random_seed"] = seed
    if max_iter is not None:
        if max_iter < 1:
            raise SystemExit("error: --max-iter must be at least 1")
        scale = max_iter / solver["max_iter"]
        _scaled(solver, scale)
        _scaled(config.get("base", {}), scale)
        changes.append(f"scaled to {max_iter} iterations")
    config["doc"] = f"The {name} solver config ({', '.join(changes)}: `demo --seed/--max-iter`)."
    path = out / f"{name}_seed{seed}{'' if max_iter is None else f'_iter{max_iter}'}.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return str(path)


def chosen(args: argparse.Namespace) -> tuple[Profile, Path, int]:
    """The profile `--long` picks, with the folder and the training images a class that the
    command line gives, or else the profile's."""
    profile = PROFILES[args.long]
    out = Path(args.out if args.out is not None else profile.out)
    train_per_class = args.train_per_class if args.train_per_class is not None else profile.train_per_class
    return profile, out, train_per_class


def run(args: argparse.Namespace) -> int:
    profile, out, train_per_class = chosen(args)
    source, data, runs, report = out / "source", out / "data", out / "runs", out / "report"
    started = time.perf_counter()
    _step("1/5 a generated ImageNet-like dataset", [
        "data", "synth", "--out", str(source), "--classes", str(args.classes),
        "--train-per-class", str(train_per_class), "--val-per-class", str(args.val_per_class),
        "--size", str(SIZE), "--seed", str(args.seed)])
    if not all((data / f"{name}_train" / "mean.binaryproto").is_file() for name in SETS):
        _step("2/5 the paper's datasets (random and natural/man-made halves) as views of one store, with means", [
            "data", "prepare", "--train", str(source / "train.txt"), "--train-root", str(source / "train"),
            "--val", str(source / "val.txt"), "--val-root", str(source / "val"),
            "--synsets", str(source / "synsets.txt"), "--families", str(source / "families.txt"),
            "--splits", "1", "--reduced", "", "--resize", str(SIZE), str(SIZE), "--workers", "1", "--out", str(data)])
    # Run again, generate rewrites the same files; other settings (--max-iter, a solver config)
    # would make other nets, which it refuses rather than mix with the runs already there.
    _step("3/5 the treatments, as Caffe nets and solvers", [
        "generate", "--all", "--arch", "demo", "--num-output", str(args.classes), "--splits", "0,natman",
        "--treatments", TREATMENTS,
        "--solver-config", _solver_config(out, args.max_iter, args.seed, profile.solver_config),
        "--data", str(data), "--out", str(runs)],
        hint=f"{runs} holds nets of other settings (--max-iter, --seed, --long); give another --out")
    _step("4/5 training every net (Caffe solver semantics, CPU)", [
        "grid", "run", "--plan", str(runs / "plan.json"), "--device", "cpu", "--jobs", str(args.jobs),
        "--progress-every", "30"])
    _step("5/5 results beside the paper", ["results", "--runs", str(runs), "--out", str(report)])
    minutes = (time.perf_counter() - started) / 60
    print(f"\nDemo done in {minutes:.1f} min. Report: {report / 'report.md'} (figures beside it)")
    return 0
