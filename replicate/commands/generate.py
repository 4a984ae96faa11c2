"""Generate Caffe run directories (solver, nets, manifest) for treatments of the paper.

One net:   python -m replicate generate --treatment AnB --split 0 --n 3 --out runs/
           (-> runs/transfer0A0B_1_3: layers 1-3 copied from half0A and frozen, trained on half0B)
The paper: python -m replicate generate --all --out runs/   (the 148 nets the authors logged)
Demo:      python -m replicate generate --all --grid demo --arch demo --num-output 40 \\
               --data demo_runs/data --out demo_runs/runs
           (what `python -m replicate demo` runs, on the datasets it made first: 41 of the
           paper's nets on split 0 and natman, see treatments.demo_grid)

Treatments (T = --target dataset letter, S = the other letter, s = --split, n = --n):
  base    half{s}{T}                        base net on one half
  BnB     transfer{s}{T}{s}{T}_1_{n}         selffer: layers 1..n copied from base{T}, frozen
  BnB+    transfer-ft{s}{T}{s}{T}_1_{n}      selffer, every layer fine-tuned
  AnB     transfer{s}{S}{s}{T}_1_{n}         transfer: layers 1..n copied from base{S}, frozen
  AnB+    transfer-ft{s}{S}{s}{T}_1_{n}      transfer, every layer fine-tuned
  random  nolearn_1_{n}                      layers 1..n random and frozen, 1000 classes
  whole   netbase                            base net on all 1000 classes
  reduced reduced-{K:04d}                    1000 classes, first K images per class (--per-class)
With --split natman the names are halfnatman{T} and transfer[-ft]natman{S}{T}_1_{n}; natman A
is the natural half and B the man-made half, as in the authors' files.  The authors' selffers
are the A-target ones (--target A): the paper pools AnA with BnB.

Each net directory gets solver.prototxt, train.prototxt + val.prototxt (or net.prototxt with
--single-net) and manifest.json; <out>/plan.json lists every net with the net it depends on and
the weights it starts from.  Everything is rendered and checked before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from replicate.data.view import is_view
from replicate.errors import ReplicateError
from replicate.experiments import plan
from replicate.experiments.rundirs import MANIFEST_FILE, Options, RunDir, render_all, trained_conflicts, write_all
from replicate.invocation import command, interpreter
from replicate.templates import Arch, Templates, load_arch, with_num_output
from replicate.treatments import SPLITS, TREATMENTS, NetSpec, net_spec

T = TypeVar("T")
_PER_NET = ("split", "n", "target", "per_class")
_GRID_FILTERS = ("grid", "splits", "treatments", "ns")


def _list(kind: Callable[[str], T]) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        try:
            return [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--treatment", metavar="NAME",
                      help=f"the treatment of one net: {', '.join(TREATMENTS)} (see above)")
    what.add_argument("--all", action="store_true",
                      help="the paper's grid: every net in results/paper_reference.csv")
    one = parser.add_argument_group("one net (with --treatment)")
    one.add_argument("--split", help=f"class split: {'|'.join(SPLITS)} (default 0)")
    one.add_argument("--n", type=int, help="layers copied or frozen, 1..7")
    one.add_argument("--target", help="dataset trained on: A|B (default B; the source of AnB "
                     "is the other half)")
    one.add_argument("--per-class", type=int, metavar="K",
                     help="images per class of a reduced net, 1..1300")
    grid = parser.add_argument_group("narrowing the grid (with --all)")
    grid.add_argument("--grid", metavar="NAME",
                      help="the grid --all draws from: paper (default; the 148 nets the authors logged) "
                      "or demo (the 41 of them that `python -m replicate demo` trains)")
    grid.add_argument("--splits", type=_list(str), metavar="LIST",
                      help="only these splits, e.g. 0,natman (nets without a split stay)")
    grid.add_argument("--treatments", type=_list(str), metavar="LIST",
                      help="only these treatments, e.g. base,AnB,AnB+")
    grid.add_argument("--ns", type=_list(int), metavar="LIST", help="only these n, e.g. 1,4,7")
    draw = parser.add_argument_group("how the nets are drawn")
    draw.add_argument("--out", type=Path, default=Path("runs"),
                      help="folder of the run directories and plan.json (default runs)")
    draw.add_argument("--arch", default="caffenet", metavar="NAME|PATH",
                      help="architecture parameter set: caffenet (the paper's, default), demo "
                      "(small, CPU; needs --num-output), or a JSON file like them")
    draw.add_argument("--num-output", type=int, metavar="N",
                      help="fc8 width (default: the architecture's, 1000 for caffenet as in "
                      "every original net; give the class count to drop the unused outputs)")
    draw.add_argument("--solver-config", metavar="NAME|PATH",
                      help="solver values for every net: paper, paper_reduced, demo or a JSON "
                      "file (default: paper, paper_reduced for reduced nets; demo with --arch "
                      "demo)")
    draw.add_argument("--data", default="data", metavar="DIR",
                      help="root of the data sets (`data prepare --out`): sources are the views <DIR>/<set>, mean "
                      "<DIR>/<train set>/mean.binaryproto; a relative DIR is taken from the current "
                      "directory and written into each net as a path relative to the net's folder, "
                      "where train resolves it (default data)")
    draw.add_argument("--single-net", action="store_true",
                      help="one net.prototxt with TRAIN/TEST include rules instead of "
                      "train.prototxt + val.prototxt")
    draw.add_argument("--val-loss", action="store_true",
                      help="add a `loss` output (mean -log prob of the true class, the 2014 "
                      "Accuracy layer's second output) to the validation net")
    draw.add_argument("--templates", metavar="DIR",
                      help="template folder with caffenet.prototxt.j2 and solver.prototxt.j2 "
                      "(default: the shipped ones)")
    draw.add_argument("--force", action="store_true",
                      help="overwrite generated files that exist with other content")


def _specs(args: argparse.Namespace) -> list[NetSpec]:
    if args.all:
        given = [f"--{f.replace('_', '-')}" for f in _PER_NET if getattr(args, f) is not None]
        if given:
            options = f"{given[0]} is an option" if len(given) == 1 else f"{', '.join(given)} are options"
            raise ReplicateError(f"{options} of one net (--treatment); with --all use "
                                 "--splits/--treatments/--ns")
        for s in args.splits or ():
            if s not in SPLITS:
                raise ReplicateError(f"split {s!r} does not exist (known: {', '.join(SPLITS)})")
        for n in args.ns or ():
            if not 1 <= n <= 7:
                raise ReplicateError(f"n {n} is outside 1..7")
        grid = args.grid or "paper"
        specs = plan.grid_specs(grid, args.splits, args.treatments, args.ns)
        if not specs:
            raise ReplicateError(f"no net of the {grid} grid matches these filters")
        return specs
    given = [f"--{f}" for f in _GRID_FILTERS if getattr(args, f) is not None]
    if given:
        raise ReplicateError(f"{', '.join(given)} narrow --all; for one net use --split/--n")
    if args.treatment not in TREATMENTS:
        raise ReplicateError(f"unknown treatment {args.treatment!r} "
                             f"(known: {', '.join(TREATMENTS)})")
    t = TREATMENTS[args.treatment]
    split = args.split if args.split is not None or not t.has_split else "0"
    target = args.target if args.target is not None or not t.has_split else "B"
    return [net_spec(args.treatment, split, args.n, target, args.per_class)]


def run(args: argparse.Namespace) -> int:
    specs = _specs(args)
    options = Options(
        arch=with_num_output(load_arch(args.arch), args.num_output),
        data_root=args.data,
        solver_config=args.solver_config,
        single_net=args.single_net,
        val_loss=args.val_loss,
        templates=Templates(args.templates) if args.templates else None,
    )
    runs = render_all(specs, options, args.out)
    trained = trained_conflicts(args.out, runs) if args.force else []
    plan_path = write_all(args.out, runs, force=args.force)
    if trained:
        shown = ", ".join(trained[:3]) + (f" and {len(trained) - 3} more" if len(trained) > 3 else "")
        print(f"warning: --force rewrote the files of {len(trained)} net(s) that hold a run trained from the earlier "
              f"ones ({shown}): their logs and snapshots now sit beside other settings, and `grid run` takes a "
              f"finished one as done. Retrain each (`{command('train')} {args.out}/NET/solver.prototxt --force`) "
              "or move its run away.", file=sys.stderr)
    names = {e["name"] for e in plan.load_plan(plan_path)}
    for run_dir in runs:
        base = run_dir.plan_entry["depends_on"]
        if base is not None and base not in names:
            print(f"note: {run_dir.name} starts from {base}, which is not in {plan_path}; "
                  "generate it too", file=sys.stderr)
    for line in (*_missing_data(runs, args.out, args.data), *_full_scale(runs, options.arch)):
        print(line, file=sys.stderr)
    print(f"generated {len(runs)} net(s) in {args.out} (plan: {plan_path})")
    return 0


def _missing_data(runs: list[RunDir], out: Path, data: str) -> list[str]:
    """A warning when the data the nets read is not there: `generate` writes paths, and without
    this the first word about it would come from `train`, one net at a time."""
    missing: dict[str, None] = {}  # the paths as a user finds them, in order
    for run_dir in runs:
        paths = json.loads(run_dir.files[MANIFEST_FILE])["data"]
        for key in ("train_source", "val_source", "mean_file"):
            path = Path(os.path.normpath(out / run_dir.name / paths[key]))
            there = path.is_file() if key == "mean_file" else is_view(path) or (path / "data.mdb").is_file()
            if not there:  # a source is a view (data prepare) or an LMDB
                missing[os.path.relpath(path) if not os.path.isabs(data) else str(path)] = None
    if not missing:
        return []
    where = f"--data {data} does not exist" if not os.path.isdir(data) else f"{len(missing)} data file(s) are missing"
    shown = ", ".join(list(missing)[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return [f"warning: {where}: the nets read {shown}. Make the paper's sets from ImageNet with "
            f"`{interpreter()} -m replicate data prepare ... --out {data}` (see its --help), or run "
            f"`{command('demo')}` for a small generated dataset and its nets; `train` stops "
            "at the first missing file."]


def _full_scale(runs: list[RunDir], arch: Arch) -> list[str]:
    """Say when the nets are the paper's own size: a newcomer may expect minutes on a laptop."""
    if arch.name != "caffenet":
        return []
    iters = sorted({json.loads(r.files[MANIFEST_FILE])["max_iter"] for r in runs})
    return [f"note: these are the paper's full-scale nets (CaffeNet, batch {arch.params['input']['train_batch']}, "
            f"{' or '.join(f'{i:,}' for i in iters)} iterations each), meant for GPUs; "
            f"`{command('demo')}` runs the treatments at CPU scale in minutes."]
