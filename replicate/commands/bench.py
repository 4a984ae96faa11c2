"""Measure training speed: CaffeNet steps, data loaders, and both together; write JSON.

  python -m replicate bench --device cuda --batch 256 --precision all --out bench.json
  python -m replicate bench --device cuda --precision all --sweep --view data/whole_train --markdown bench.md
  python -m replicate bench --device cuda --precision all --sweep --peer --test-pass   # against plain PyTorch
  python -m replicate bench --device cpu --batch 2 --iterations 2 --warmup 1     # a quick check

(a) step: the paper's CaffeNet (every layer learning) on synthetic batches through the real
Solver (forward, backward, Caffe's SGD update), per precision: ms/step, images/s, TFLOP/s and the
fraction of the GPU's dense peak (H100/H200; null for other devices).  (b) loaders: images/s of
the serial, worker and GPU data paths over each --view of a store and --lmdb (raw or JPEG
records: decoded on the CPU by the serial and worker paths, on the device by the GPU path) and
--jpeg-dir, with what receiving costs the training process per image (its CPU time, all threads
but not the workers': one core's ceiling) and each path's first batch against the serial path's.
(c) end to end: a Data layer over the first --view (else --lmdb) feeding the same training step,
through the data path `train` takes on the device (on a GPU: reading workers, transforms on the
GPU), with each precision's fastest step setting.  --sweep times every channels_last/compile combination.
(d) --peer: the plain-PyTorch CaffeNet a user would write instead (replicate.bench.peer), eager and
compiled, at each step setting's precision and layout, and our images/s over its.  (e) --test-pass:
one whole test pass at the paper's settings (test_iter 1000 of batch 50).  --loaders-only times (b)
alone (no step), --skip-loaders all but (b).
Every setting starts from a clean compiler state (torch._dynamo.reset), so none inherits another's
compiled code.  fp32 is Caffe's arithmetic (TF32 off); tf32 and bf16 are opt-in speed settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from replicate.bench.peer import time_peer
from replicate.bench.step import time_steps
from replicate.bench.table import best_steps, markdown
from replicate.bench.test_pass import time_test_pass
from replicate.data.throughput import (
    Rate, folder_source, loader_entry, loader_rates, open_source, source_kind, train_maker,
)
from replicate.errors import ReplicateError
from replicate.io.binary import prepare_output
from replicate.machine import cpu_model
from replicate.solver.data_feed import default_data_workers
from replicate.solver.device import PRECISIONS, device_name
from replicate.solver.run import pick_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--batch", type=int, default=256, help="images per step (default 256, the paper's)")
    parser.add_argument("--precision", choices=(*PRECISIONS, "all"), default="fp32",
                        help="fp32 (Caffe's arithmetic, default), tf32, bf16, or all three")
    parser.add_argument("--iterations", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--lmdb", action="append", default=[], help="LMDB to time loading from (repeatable)")
    parser.add_argument("--view", action="append", default=[],
                        help="view of a store (`data prepare`, e.g. data/whole_train) to time loading from (repeatable)")
    parser.add_argument("--jpeg-dir", help="folder of JPEGs to time loading from")
    parser.add_argument("--workers", type=int,
                        help="worker processes for the loaders and the end-to-end runs (default: what `train` "
                             "uses on this device: the CPUs this process may use less one on a GPU, 0 on the CPU)")
    parser.add_argument("--loader-batches", type=int, default=10, help="timed batches per loader path (default 10)")
    parser.add_argument("--loaders-only", action="store_true",
                        help="time only the loaders of --view, --lmdb and --jpeg-dir (no step, no end to end)")
    parser.add_argument("--skip-loaders", action="store_true",
                        help="time the step and end to end from --view/--lmdb, not the loaders alone")
    parser.add_argument("--compile", action="store_true", help="torch.compile the net's forward")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend for --compile and --sweep (default inductor)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    parser.add_argument("--space-to-depth", action="store_true",
                        help="run conv1 (few channels, a stride) as a stride-1 convolution over blocks of pixels: "
                             "the same products summed in another order (replicate.layers.convolution)")
    parser.add_argument("--sweep", action="store_true",
                        help="time every combination of --channels-last and --compile per precision; the end-to-end "
                             "runs use each precision's fastest")
    parser.add_argument("--peer", action="store_true",
                        help="also time the plain-PyTorch CaffeNet (eager and compiled) at each setting's precision "
                             "and layout, and report our images/s over its")
    parser.add_argument("--test-pass", action="store_true", help="also time one whole test pass per precision")
    parser.add_argument("--test-iter", type=int, default=1000, help="test batches of a test pass (default 1000)")
    parser.add_argument("--test-batch", type=int, default=50, help="images per test batch (default 50)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--markdown", help="also write the results as Markdown tables here (for the README)")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("batch", "precision", "iterations", "warmup", "workers", "loader_batches",
                                          "compile", "compile_backend", "channels_last", "sweep", "peer", "test_pass",
                                          "test_iter", "test_batch", "view", "lmdb", "jpeg_dir", "loaders_only",
                                          "skip_loaders", "space_to_depth")}



def _step_line(r: dict[str, Any]) -> str:
    peak = f", {100 * r['fraction_of_peak']:.1f}% of peak" if r["fraction_of_peak"] is not None else ""
    options = "".join(f", {name}" for name in ("channels_last", "compile", "space_to_depth") if r.get(name))
    waits = {True: ", WAITS for the device", False: ", no host sync", None: ""}[r.get("waits_for_device")]
    return (f"{r['precision']}{options}: {r['ms_per_step']:.1f} ms/step, {r['images_per_s']:.0f} images/s, "
            f"{r['achieved_tflops']:.2f} TFLOP/s{peak}{waits}")


def _time_peer(report: dict[str, Any], device: torch.device, batch: int, precision: str, channels_last: bool,
               backend: bool | str, timing: dict[str, int]) -> None:
    """The peer eager and compiled at this precision and layout, once per pair."""
    for compile in (False, backend):
        done = [(r["precision"], r["channels_last"], r["compile"]) for r in report["peer"]]
        if (precision, channels_last, compile) in done:
            continue
        result = time_peer(device, batch, precision, channels_last, compile, **timing)
        report["peer"].append(result)
        options = "".join(f", {name}" for name in ("channels_last", "compile") if result[name])
        print(f"peer {precision}{options}: {result['ms_per_step']:.1f} ms/step, {result['images_per_s']:.0f} images/s",
              file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.batch < 1 or args.iterations < 1 or args.warmup < 0 or args.test_iter < 1 or args.test_batch < 1:
        raise ReplicateError("--batch, --iterations, --test-iter and --test-batch must be at least 1, --warmup at least 0")
    if args.workers is not None and args.workers < 0:
        raise ReplicateError(f"--workers must be 0 or more, not {args.workers}")
    if args.loaders_only and args.skip_loaders:
        raise ReplicateError("--loaders-only and --skip-loaders exclude each other")
    for option, path in (("--out", args.out), ("--markdown", args.markdown)):
        if path:
            prepare_output(path, option)
    device = pick_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cudnn.benchmark = True
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["replicate", *sys.argv[1:]]),
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "settings": _settings(args),
        "step": [],
        "peer": [],
        "test_pass": [],
        "loaders": [],
        "end_to_end": [],
    }
    print(f"{report['device_name']} ({device}), torch {torch.__version__}, batch {args.batch}", file=sys.stderr)
    precisions = PRECISIONS if args.precision == "all" else (args.precision,)
    backend = True if args.compile_backend == "inductor" else args.compile_backend
    variants = [(False, False), (True, False), (False, backend), (True, backend)] if args.sweep else [
        (args.channels_last, backend if args.compile else False)]
    timing = dict(iterations=args.iterations, warmup=args.warmup)
    for precision in () if args.loaders_only else precisions:
        for channels_last, compile in variants:
            result = time_steps(device, args.batch, precision, channels_last=channels_last, compile=compile,
                                space_to_depth=args.space_to_depth, **timing)
            report["step"].append(result)
            print(f"step {_step_line(result)}", file=sys.stderr)
            if args.peer:
                _time_peer(report, device, args.batch, precision, channels_last, backend, timing)
        if args.test_pass:
            fastest = best_steps(report)[precision]
            result = time_test_pass(device, args.test_batch, args.test_iter, precision,
                                    fastest["channels_last"], fastest["compile"])
            report["test_pass"].append(result)
            print(f"test pass {precision}: {result['seconds']:.1f} s for {args.test_iter} batches of "
                  f"{args.test_batch} ({result['images_per_s']:.0f} images/s)", file=sys.stderr)
    sources = [] if args.skip_loaders else [(path, open_source(path)) for path in [*args.view, *args.lmdb]]
    if args.jpeg_dir and not args.skip_loaders:
        sources.append((args.jpeg_dir, folder_source(args.jpeg_dir)))
    workers = args.workers if args.workers is not None else default_data_workers(device) or 0
    report["settings"]["workers"] = workers
    for path, source in sources:
        maker = train_maker(source, args.batch)
        rates = loader_rates(maker, args.loader_batches, workers, gpu=device.type == "cuda")
        entry = {"source": str(path), "kind": source_kind(source), "records": len(source),
                 "crop": maker.transformer.crop, **loader_entry(rates)}
        report["loaders"].append(entry)
        source.close()
        shown = ", ".join(f"{k} {v.images_per_s:.0f} (this process {1e6 * v.consumer_cpu_s_per_image:.1f} CPU µs/image, "
                          f"ceiling {v.ceiling or float('inf'):.0f})" if isinstance(v, Rate) else f"{k} {v}"
                          for k, v in rates.items())
        print(f"loader {entry['kind']} {path}: images/s {shown}", file=sys.stderr)
    if (args.view or args.lmdb) and not args.loaders_only:
        best = best_steps(report)
        first = [*args.view, *args.lmdb][0]
        for precision in precisions:
            fastest = {"channels_last": best[precision]["channels_last"], "compile": best[precision]["compile"]}
            result = time_steps(device, args.batch, precision, lmdb=first, workers=workers,
                                space_to_depth=args.space_to_depth, **fastest, **timing)
            report["end_to_end"].append(result)
            print(f"end to end {_step_line(result)}", file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    tables = markdown(report)
    if args.markdown:
        Path(args.markdown).write_text(tables)
    print(tables, file=sys.stderr)
    return 0
