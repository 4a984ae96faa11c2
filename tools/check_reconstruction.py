"""Compares the three nets that tests/release_support.py rebuilds with the real ones.

Why: CI cannot ship the authors' job logs (their release states no licence), so
tests/test_results_release.py reads files rebuilt from facts we wrote down from them.  This
checks, on a fetched release, that every rebuilt file has the real one's lines, line for line:
the same glog thread, file:line and message, and the same time stamp on its first and last
line.  Messages may differ only where the reconstruction cannot know them: training losses
(the release's curves hold only validation points; no statistic reads them) and the scores of
a test that a later job repeated (the authors' curve holds the later record; the earlier one is
written a little off).  Anything else is a difference the spec must fix.

Get the release with `git clone https://github.com/yosinski/convnet_transfer`; run (from the
repo root; a few seconds):
  python tools/check_reconstruction.py convnet_transfer/results
It exits 1 when a file differs.
"""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from release_support import RELEASE, Job, ReleaseNet, job_lines, newest  # noqa: E402
from results_support import load_curves  # noqa: E402

#: glog's time; thread id (five columns) and file:line; the message.
_LINE = re.compile(r"I(\d{4} \d\d:\d\d:\d\d\.\d{6}) ( *\d+ \S+\]) (.*)")
_TEST = re.compile(r"Iteration (\d+), Testing net")
_UNKNOWABLE = re.compile(r"Iteration \d+, loss = |Test score #[01]: ")


def _unknowable(real: str, ours: str, test: int | None, repeated: set[int]) -> bool:
    """Two messages that differ only where the reconstruction cannot know the real one."""
    m = _UNKNOWABLE.match(real)
    return (m is not None and ours.startswith(m[0])
            and (m[0].endswith("loss = ") or test in repeated))


def _compare(net: ReleaseNet, job: Job, real: list[str],
             ours: list[str]) -> tuple[int, int, list[str]]:
    """Lines equal, lines that differ where the reconstruction cannot know them, and the
    differences that count."""
    if len(real) != len(ours):
        return 0, 0, [f"{len(ours)} lines, the real file has {len(real)}"]
    repeated = {i for i, newest_job in newest(net).items() if newest_job != job.id}
    equal, unknowable, wrong, test = 0, 0, [], None
    for lineno, (a, b) in enumerate(zip(real, ours), 1):
        ma, mb = _LINE.fullmatch(a), _LINE.fullmatch(b)
        if ma and (m := _TEST.fullmatch(ma[3])):
            test = int(m[1])
        if not (ma and mb) or ma[2] != mb[2]:
            wrong.append(f"line {lineno}: {b!r}, the real one {a!r}")
        elif ma[3] == mb[3]:
            equal += 1
        elif _unknowable(ma[3], mb[3], test, repeated):
            unknowable += 1
        else:
            wrong.append(f"line {lineno}: {b!r}, the real one {a!r}")
    for which, what in ((0, "first"), (-1, "last")):
        if real and real[which][:22] != ours[which][:22]:
            wrong.append(f"time of the {what} line: {ours[which][:22]!r}, the real one "
                         f"{real[which][:22]!r}")
    return equal, unknowable, wrong


def main(release: str) -> int:
    curves = load_curves()
    good = True
    for net in RELEASE:
        for job in net.jobs:
            path = Path(release) / net.name / net.file(job)
            with gzip.open(path, "rt") as handle:
                real = handle.read().splitlines()
            equal, unknowable, wrong = _compare(net, job, real,
                                                job_lines(net, job, curves[net.name]))
            print(f"{net.name}/{net.file(job)}: {len(real)} lines, {equal} equal, {unknowable} "
                  f"training losses or earlier scores of repeated tests, {len(wrong)} other "
                  "differences")
            for line in wrong[:5]:
                print(f"  {line}")
            good = good and not wrong
    print("OK" if good else "FAILED")
    return 0 if good else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} <release>/results")
    sys.exit(main(sys.argv[1]))
