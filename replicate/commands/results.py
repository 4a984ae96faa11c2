"""Build the results report: statistics, figures and Table 1 beside the paper's.

`python -m replicate results --runs DIR --out report/` reads DIR as either our run dirs (each
with train.log and/or metrics.jsonl and manifest.json, as `generate` + `train`/`grid` leave
them) or a folder of the authors' raw Caffe logs (`<name>.log.gz`, `<name>.log`, or
`<name>/` holding one file per job, `*.log[.gz]` or the cluster's `*.o<jobid>[.gz]`: the
release's `results/` folder as published), or both.  It writes report/results.csv (the
paper's columns), report/curves.csv (every validation point), the figures as PNG and
report/report.md, which puts every number beside the paper's.  Logs that are corrupt or
truncated are listed in the report with the reason and left out; so are log segments without a
test, tests cut off by a killed job, and nets set up but never started.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replicate.errors import ReplicateError

from replicate.results.findings import claims_table
from replicate.results.reference import (DEFAULT_CURVES, DEFAULT_PATH, load_paper_curves,
                                        load_reference)
from replicate.results.report import build_report
from replicate.results.runs import RAW_LOG, RUN_DIR, find_runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", required=True, metavar="DIR",
                        help="folder of run dirs or of raw Caffe logs")
    parser.add_argument("--out", default="report", metavar="DIR",
                        help="where to write the report (default: report/)")
    parser.add_argument("--paper", default=str(DEFAULT_PATH), metavar="CSV",
                        help="the paper's per-net numbers (default: results/paper_reference.csv)")
    parser.add_argument("--paper-curves", default=str(DEFAULT_CURVES), metavar="CSV_GZ",
                        help="the paper's validation curves "
                             "(default: results/original_curves.csv.gz)")


def _check_out(out: Path) -> None:
    """--out must be a folder or become one: a file there (or above it) is said before the runs
    are read, not as mkdir's traceback once they are."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == out else f"cannot be made: {path} is a file"
                raise ReplicateError(f"--out {out}: {what}; the report is a folder (default: report/)")
            return


def run(args: argparse.Namespace) -> int:
    _check_out(Path(args.out))
    paper = load_reference(args.paper)
    paper_curves = load_paper_curves(args.paper_curves)
    runs = find_runs(args.runs)
    print(f"found {runs.count(RUN_DIR)} run dirs and {runs.count(RAW_LOG)} raw Caffe logs "
          f"in {args.runs}: {len(runs.nets)} readable, {len(runs.skipped)} skipped")
    for s in runs.skipped:
        print(f"  skipped {s.name}: {s.path}: {s.reason}")
    left_out = [item for n in runs.nets for item in n.curve.left_out]
    unfinished = sum(1 for n in runs.nets if n.complete is False)
    if left_out or runs.not_started or unfinished:
        print(f"  {len(runs.not_started)} not started, {unfinished} stopped before max_iter; "
              f"{len(left_out)} log segments or tests left out of the curves "
              f"({sum(1 for i in left_out if i.lost)} tests lost): listed in the report")
    report = build_report(runs, args.out, paper, paper_curves, args.runs)
    if report.relative:
        print("scaled or unnamed runs: the report compares shapes (relative to each base), "
              "not absolute numbers")
    print(f"report: {report.markdown} (table {report.csv.name}, figures "
          f"{', '.join(p.name for p in report.figures)})")
    print("\n" + "\n".join(claims_table(report.checks, report.paper_checks)))
    return 0
