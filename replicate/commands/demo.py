"""The embedded default: the paper's whole pipeline, scaled to minutes on a CPU.

Generates a 40-class ImageNet-like dataset (natural textures vs man-made shapes), cuts it into
the paper's datasets (a random A/B split and the natural/man-made split) as views of one store with
their means (`data prepare`), generates the paper's treatments for a scaled CaffeNet (base A/B, BnB, BnB+, AnB,
AnB+, random frozen layers n = 1..7, natural/man-made transfer), trains them all with Caffe's
solver semantics and one schedule for every net, as the paper's, and writes the report with the
paper's figures and Table 1 beside ours, ending with the paper's claims checked on screen.  Every
step is one of this program's own commands, printed as it runs; running the demo again continues
where it stopped.

  python -m replicate demo                 # into demo_runs/: 41 nets
  python -m replicate demo --long          # into demo_long_runs/: 61 nets, 1.5 times the time

The default trains the demo grid (`generate --grid demo`): every treatment the report's claims
and figures need, transfers in one direction and the fine-tuned nets at n = 1, 3, 5, 7.
`--long` trains every net of the splits it uses, both directions and every n, for tighter bounds.
docs/demo.md gives the design and its measurements.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replicate import cli
from replicate.checkout import in_checkout
from replicate.data.cpus import available_cpus
from replicate.errors import ReplicateError
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
    """What `--long` changes: the nets (generate's arguments that choose them) and the folder."""

    nets: tuple[str, ...]
    out: str


PROFILES = {False: Profile(("--grid", "demo"), "demo_runs"),
            True: Profile(("--splits", "0,natman", "--treatments", TREATMENTS), "demo_long_runs")}
#: The demo's solver config: every net, base or not, trains 3,000 iterations.
SOLVER_CONFIG = "demo"
#: Training images a class: with 160 the bases are near their plateau by 3,000 iterations.
TRAIN_PER_CLASS = 160


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--long", action="store_true",
                        help="every net of the two splits: transfers in both directions and the fine-tuned "
                             "nets at every n (61 nets instead of 41, 1.5 times the time), for tighter bounds")
    parser.add_argument("--out", help="folder for everything (default demo_runs, or demo_long_runs with --long)")
    parser.add_argument("--classes", type=int, default=40, help="classes of the generated dataset (default 40)")
    parser.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS,
                        help="training images per class (default %(default)s)")
    parser.add_argument("--val-per-class", type=int, default=25, help="validation images per class (default 25)")
    parser.add_argument("--max-iter", type=int,
                        help="iterations per net (default: the solver config's, 3,000); the step, test and "
                             "snapshot intervals scale with it")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the generated images and of every net's solver (fillers, "
                             "crops, mirrors, dropout); default %(default)s")
    parser.add_argument("--jobs", type=int, default=available_cpus(),
                        help="nets trained at once (default: one per CPU this process may use)")


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


def _solver_config(out: Path, max_iter: int | None, seed: int) -> str:
    """The shipped solver config, or a copy of it with `seed` as its random_seed and, with
    `max_iter`, scaled to that many iterations.  The copy is named by its settings
    (demo_seed2_iter500.json): one of other settings never overwrites the file that the nets
    already in `out` were made from."""
    config = json.loads(in_checkout(SOLVER_CONFIG_DIR / f"{SOLVER_CONFIG}.json").read_text())
    solver = config["solver"]
    if max_iter is None and seed == solver["random_seed"]:
        return SOLVER_CONFIG
    changes = [f"random_seed {seed}"]
    solver["random_seed"] = seed
    if max_iter is not None:
        _scaled(solver, max_iter / solver["max_iter"])
        changes.append(f"scaled to {max_iter} iterations")
    config["doc"] = f"The {SOLVER_CONFIG} solver config ({', '.join(changes)}: `demo --seed/--max-iter`)."
    path = out / f"{SOLVER_CONFIG}_seed{seed}{'' if max_iter is None else f'_iter{max_iter}'}.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return str(path)


def chosen(args: argparse.Namespace) -> tuple[Profile, Path]:
    """The profile `--long` picks, with the folder the command line gives, or else the profile's."""
    profile = PROFILES[args.long]
    return profile, Path(args.out if args.out is not None else profile.out)


def run(args: argparse.Namespace) -> int:
    if args.max_iter is not None and args.max_iter < 1:  # before step 1 writes anything
        raise ReplicateError("--max-iter must be at least 1")
    profile, out = chosen(args)
    source, data, runs, report = out / "source", out / "data", out / "runs", out / "report"
    started = time.perf_counter()
    _step("1/5 a generated ImageNet-like dataset", [
        "data", "synth", "--out", str(source), "--classes", str(args.classes),
        "--train-per-class", str(args.train_per_class), "--val-per-class", str(args.val_per_class),
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
        "generate", "--all", *profile.nets, "--arch", "demo", "--num-output", str(args.classes),
        "--solver-config", _solver_config(out, args.max_iter, args.seed),
        "--data", str(data), "--out", str(runs)],
        hint=f"{runs} holds nets of other settings (--max-iter, --seed, --long); give another --out")
    _step("4/5 training every net (Caffe solver semantics, CPU)", [
        "grid", "run", "--plan", str(runs / "plan.json"), "--device", "cpu", "--jobs", str(args.jobs),
        "--progress-every", "30"])
    _step("5/5 results beside the paper", ["results", "--runs", str(runs), "--out", str(report)])
    minutes = (time.perf_counter() - started) / 60
    print(f"\nFigure 2: {report / 'figure2.png'}\nFigure 3: {report / 'figure3.png'}\n"
          f"Report:   {report / 'report.md'} (every net, each claim's rule)\n"
          "Design:   docs/demo.md (why these nets and this schedule; the BnB dip, not reproduced at demo scale)\n"
          f"Demo done in {minutes:.1f} min.")
    return 0
