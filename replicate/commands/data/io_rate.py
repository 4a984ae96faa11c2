"""Measure a store's random-read rate cold and from the page cache, against what N GPUs need.

  python -m replicate data io-rate data/store --gpus 1,8,16 --images-per-gpu 7500
  python -m replicate data io-rate data/whole_train --speed-from bench.json --out io.json

Reads a random sample of the store's records (a store folder, or a view of one) the way
training does, at each --threads count: once after dropping the store from the page cache
(posix_fadvise; mincore says how cold the sample really was) and once again from the cache.
Then says how many GPUs each rate feeds at --images-per-gpu (default 7,500: one H200's measured
end-to-end fp32 rate from a raw view; or the fp32 end-to-end rate of a `bench --out` JSON), and
whether the store fits in this machine's memory.  See docs/data.md, "Where to put the store".
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from replicate.data.cpus import available_cpus
from replicate.data.readrate import Need, measure, open_store
from replicate.errors import ReplicateError
from replicate.io.binary import prepare_output
from replicate.machine import cpu_model

#: One H200's end-to-end fp32 training rate from a raw view (15 workers), measured 2026-12-04.
H200_FP32_END_TO_END = 7500.0
SAMPLE_BYTES = 512 * 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a store folder (`data prepare`'s output) or a view in it")
    parser.add_argument("--gpus", default="1,8,16", help="GPU counts to compare with (default 1,8,16)")
    parser.add_argument("--images-per-gpu", type=float, default=H200_FP32_END_TO_END,
                        help=f"training images/s of one GPU (default {H200_FP32_END_TO_END:,.0f})")
    parser.add_argument("--speed-from", metavar="BENCH_JSON",
                        help="take --images-per-gpu from a `bench --out` JSON (fp32, end to end if timed)")
    parser.add_argument("--threads", help="concurrent readers to time, comma-separated (default: 1, the "
                                          "CPUs this process may use, and 4 times that)")
    parser.add_argument("--records", type=int, help="records read per pass (default: ~512 MB of them)")
    parser.add_argument("--out", help="write the figures as JSON here")


def _counts(text: str, what: str) -> list[int]:
    try:
        counts = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise ReplicateError(f"--{what} {text!r}: expected positive whole numbers separated by commas")
    return counts


def file_system(path: Path) -> str:
    """`<type> <device>` of the mount holding `path` (/proc/mounts), or "unknown"."""
    real, best = os.path.realpath(path), ("", "unknown")
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best[1]
    for line in lines:
        device, mount, kind = line.split()[:3]
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best[0]):
            best = (mount, f"{kind} {device}")
    return best[1]


def memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


def run(args: argparse.Namespace) -> int:
    gpus = _counts(args.gpus, "gpus")
    if args.out:
        prepare_output(args.out, "--out")
    cpus = available_cpus()
    threads = _counts(args.threads, "threads") if args.threads else sorted({1, cpus, 4 * cpus})
    per_gpu = args.images_per_gpu
    if args.speed_from:
        from replicate.experiments.timelimit import bench_speed

        per_gpu = bench_speed(args.speed_from).train
    if per_gpu <= 0:
        raise ReplicateError(f"--images-per-gpu must be positive, not {per_gpu}")
    store = open_store(args.store)
    size = int(store.meta.get("bytes") or (store.path / "data.bin").stat().st_size)
    record_bytes = size / len(store)
    records = args.records or max(256, min(len(store), int(SAMPLE_BYTES / record_bytes)))
    where = file_system(store.path)
    print(f"{store.path}: {store.format} store, {len(store):,} records of {record_bytes:,.0f} bytes on average, "
          f"{_gb(size)}; file system {where}; CPU {cpu_model()}, {cpus} CPUs here")
    rates = measure(store, threads, records)
    print("threads  cache  records  cached before  MB/s     images/s")
    for r in rates:
        print(f"{r.threads:>7}  {r.cache:<5}  {r.records:>7}  {100 * r.resident_before:>12.1f}%  "
              f"{r.bytes_per_s / 1e6:>7,.0f}  {r.records_per_s:>9,.0f}")
    best = {cache: max(found, key=lambda r: r.bytes_per_s) for cache in ("cold", "warm")
            if (found := [r for r in rates if r.cache == cache])}
    if "cold" not in best:
        print(f"No record left the page cache when dropped ({where}: tmpfs keeps files in memory; elsewhere "
              "another process holds the pages): only reads from memory were timed.")
    memory = memory_bytes()
    fits = size < 0.8 * memory
    print(f"One GPU at {per_gpu:,.0f} images/s reads {_gb(Need(1, per_gpu, record_bytes).bytes_per_s)}/s of records.")
    for cache, rate in best.items():
        where_from = "cold (from the file system)" if cache == "cold" else "from the page cache"
        print(f"{where_from}: {_gb(rate.bytes_per_s)}/s with {rate.threads} reader(s) feeds "
              f"{Need(1, per_gpu, record_bytes).gpus_served(rate):.1f} GPU(s)")
    for n in gpus:
        need = Need(n, per_gpu, record_bytes)
        if "cold" in best and best["cold"].bytes_per_s >= need.bytes_per_s:
            verdict = "cold reads suffice"
        elif best["warm"].bytes_per_s >= need.bytes_per_s:
            verdict = "needs the store in the page cache" + (
                "" if fits else f", and it ({_gb(size)}) does not fit in this machine's memory ({_gb(memory)})")
        else:
            verdict = f"more than these readers get even from memory ({_gb(best['warm'].bytes_per_s)}/s)"
        print(f"{n} GPU(s) need {_gb(need.bytes_per_s)}/s: {verdict}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "store": str(store.path), "format": store.format, "records": len(store), "bytes": size,
            "record_bytes": record_bytes, "file_system": where, "cpu": cpu_model(), "cpus": cpus,
            "memory_bytes": memory, "images_per_gpu": per_gpu,
            "rates": [r.as_dict() for r in rates],
            "need_bytes_per_s": {str(n): Need(n, per_gpu, record_bytes).bytes_per_s for n in gpus},
        }, indent=1) + "\n")
    store.close()
    return 0
