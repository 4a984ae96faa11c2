"""Three nets of the authors' release rebuilt, job log by job log, from facts of their real logs.

The release (github.com/yosinski/convnet_transfer, commit 9838c27, `results/`) states no
licence, so this project does not redistribute its files (tests/data/convnet_transfer/README.md).
`RELEASE` below is what we wrote down from them instead: for each net, each cluster job's file
name, glog thread id, first and last iteration, the glog times of its first and last lines and
how it ended.  `write_release` turns those facts into the release's layout:

- one folder per net, one gzip per job, `<yymmdd_hhmmss>_<job>.o<jobid>.gz` (the gzip header
  names the file, as gzip(1) wrote them), and the net's `imagenet_solver.prototxt` (ours,
  rendered from solver_configs/paper.json, which holds the authors' solver);
- the only four kinds of line its job logs hold (353 of them; all but netbase's pasted
  catlog.oMANUAL.gz), glog-prefixed exactly as they are
  there (`I0328 12:25:48.564872 13505 solver.cpp:217] ...`: thread id in five columns), in the
  same order: every 20 iterations (the solver's display) `Iteration N, lr = X` then
  `Iteration N, loss = Y`, and after the one of each 1000th iteration `Iteration N, Testing net`,
  `Test score #0: <top-1>`, `Test score #1: <loss>`;
- test scores from results/original_curves.csv.gz (the authors' curves, as glog printed them);
  where a later job repeated a test, the earlier job's record is not in those curves, so it is
  written a little off (top-1 -0.002, loss +0.01) and a reader that keeps it gives a wrong curve;
- times spread evenly between each job's first and last line; lr by the solver's step policy;
  training losses (no statistic reads them) drawn near the validation loss.

Every file has the real one's lines, line for line, but for the time stamps in between, the
training losses and the repeated tests' earlier records (tools/check_reconstruction.py checks
that on a fetched release).  All three nets take about a second to write.
"""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from replicate.io.prototxt import format_text
from replicate.templates import Templates, load_solver_config
from results_support import load_curves

SOLVER = "imagenet_solver.prototxt"
#: The authors' solver (solver_configs/paper.json), as the release's folders name its nets.
PAPER_SOLVER = Templates().solver(load_solver_config("paper"), {
    "train": "imagenet_train.prototxt", "val": "imagenet_val.prototxt"})
DISPLAY, TEST_INTERVAL = PAPER_SOLVER.display, PAPER_SOLVER.test_interval

#: How a job's log ends: after the loss line of its last iteration, after the scores of the test
#: there, or with only that test's `Testing net` line (killed inside the test).
AFTER_TRAIN, AFTER_TEST, INSIDE_TEST = "after train", "after test", "inside test"


@dataclass(frozen=True)
class Job:
    """One cluster job's stdout.  `first` None: the job logged nothing (its file is a gzip of
    nothing).  Times are glog's, `MMDD HH:MM:SS.ffffff`."""

    id: int
    thread: int = 0
    first: int | None = None
    last: int | None = None
    began: str = ""
    ended: str = ""
    ends: str = AFTER_TRAIN


@dataclass(frozen=True)
class ReleaseNet:
    """A net's folder: its name and `<yymmdd_hhmmss>_<job>`, the prefix of its files."""

    name: str
    prefix: str
    jobs: tuple[Job, ...]

    def file(self, job: Job) -> str:
        return f"{self.prefix}.o{job.id}.gz"


RELEASE = (
    # Killed at 332320; a job resumed from 330000 died at 330920 before a test; the next one
    # resumed from 330000 again and ran to the end.
    ReleaseNet("nolearn_1_2", "140328_115722_nolearn", (
        Job(226540, 13505, 20, 332320, "0328 12:25:48.564872", "0402 14:45:49.458094"),
        Job(227799, 8524, 330020, 330920, "0402 14:51:25.238077", "0402 15:09:14.409572"),
        Job(227818, 9941, 330020, 450000, "0402 15:19:26.440743", "0404 12:33:51.197010",
            AFTER_TEST))),
    # Five jobs, each resumed from the last snapshot of the one before, and one (258003) that
    # logged nothing.
    ReleaseNet("transfer-ft0A0B_1_5", "140507_104429_transfer-ft0A0B", (
        Job(251888, 16041, 20, 269700, "0507 11:48:11.451342", "0513 10:00:57.796227"),
        Job(252594, 12037, 260020, 341880, "0513 16:48:43.174877", "0516 23:47:25.650272"),
        Job(253010, 10800, 340020, 414160, "0519 12:19:40.080188", "0522 15:19:59.964931"),
        Job(257916, 3230, 410020, 433540, "0528 22:30:38.393148", "0529 22:15:45.019559"),
        Job(258003),
        Job(258291, 978, 430020, 450000, "0601 07:25:53.674840", "0601 18:00:58.895803",
            AFTER_TEST))),
    # Killed inside the test at 103000 (its 10607th line); resumed from 100000, repeating it.
    ReleaseNet("transfer0A0B_1_5", "140415_235525_transfer0A0B", (
        Job(240418, 18929, 20, 103000, "0416 17:23:17.850874", "0417 16:52:57.071689",
            INSIDE_TEST),
        Job(240769, 7701, 100020, 450000, "0418 20:40:56.829360", "0422 04:16:55.963853",
            AFTER_TEST))),
)


def _lr(iteration: int) -> float:
    """The step policy's rate, as 2014 Caffe computed it."""
    s = PAPER_SOLVER
    return s.base_lr * s.gamma ** (iteration // s.stepsize)


def _scored(job: Job) -> list[int]:
    """The iterations of the tests a job logged with their scores."""
    assert job.first is not None and job.last is not None
    first = -(-job.first // TEST_INTERVAL) * TEST_INTERVAL
    return [i for i in range(first, job.last + 1, TEST_INTERVAL)
            if i < job.last or job.ends == AFTER_TEST]


def newest(net: ReleaseNet) -> dict[int, int]:
    """Test iteration -> the job whose record the curve holds: the last to run (the jobs are
    listed in the order they ran)."""
    return {i: job.id for job in net.jobs if job.first is not None for i in _scored(job)}


def _messages(job: Job, curve: dict[int, tuple[str, str]], records: dict[int, int],
              rng: random.Random) -> list[tuple[str, str]]:
    """(file:line, message) of each line the job logged."""
    assert job.first is not None and job.last is not None
    out = []
    for it in range(job.first, job.last + 1, DISPLAY):
        following = curve.get(-(-it // TEST_INTERVAL) * TEST_INTERVAL) or curve[max(curve)]
        out.append(("solver.cpp:217", f"Iteration {it}, lr = {_lr(it):g}"))
        out.append(("solver.cpp:74", f"Iteration {it}, loss = "
                                     f"{float(following[1]) * rng.uniform(0.75, 1.05):g}"))
        if it % TEST_INTERVAL or (it == job.last and job.ends == AFTER_TRAIN):
            continue
        out.append(("solver.cpp:96", f"Iteration {it}, Testing net"))
        if it == job.last and job.ends == INSIDE_TEST:
            break
        top1, loss = curve[it]
        if records[it] != job.id:  # repeated by a later job: not the curve's record
            top1, loss = f"{float(top1) - 0.002:g}", f"{float(loss) + 0.01:g}"
        out.append(("solver.cpp:123", f"Test score #0: {top1}"))
        out.append(("solver.cpp:123", f"Test score #1: {loss}"))
    return out


def job_lines(net: ReleaseNet, job: Job, points: list[tuple[int, str, str]]) -> list[str]:
    """The lines of one job's log, given the net's curve (`load_curves`)."""
    if job.first is None:
        return []
    curve = {i: (top1, loss) for i, top1, loss in points}
    records = newest(net)
    if sorted(records) != sorted(curve):
        raise ValueError(f"{net.name}: the jobs' tests are not the authors' curve's iterations")
    messages = _messages(job, curve, records, random.Random(f"{net.name}.{job.id}"))
    year = 2000 + int(net.prefix[:2])
    began, ended = (datetime.strptime(f"{year}{t}", "%Y%m%d %H:%M:%S.%f")
                    for t in (job.began, job.ended))
    span, steps = ended - began, max(len(messages) - 1, 1)
    return [f"I{began + span * k / steps:%m%d %H:%M:%S.%f} {job.thread:5d} {where}] {msg}"
            for k, (where, msg) in enumerate(messages)]


def write_job(path: Path, lines: list[str]) -> Path:
    """A gzip whose header names the file (as gzip(1) wrote the release's), time stamp 0."""
    with open(path, "wb") as raw, gzip.GzipFile(str(path), "wb", 6, raw, mtime=0) as handle:
        handle.write("".join(line + "\n" for line in lines).encode())
    return path


def write_release(root: Path) -> Path:
    """The three nets' folders under `root` (made), as the release's `results/` holds them."""
    curves = load_curves()
    for net in RELEASE:
        folder = root / net.name
        folder.mkdir(parents=True)
        for job in net.jobs:
            write_job(folder / net.file(job), job_lines(net, job, curves[net.name]))
        (folder / SOLVER).write_text(format_text(PAPER_SOLVER))
    return root
