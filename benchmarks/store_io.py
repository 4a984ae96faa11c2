"""What a store costs to read at full scale: random reads cold and from the page cache, and the
means, on synthetic stores, extrapolated to ILSVRC2012.

  python benchmarks/store_io.py --dir /scratch/io --raw-records 20000 --jpeg-records 50000 --out io.json

Writes two synthetic stores in --dir (on the file system to measure): raw records of 3x256x256
random bytes (196,608 bytes, incompressible like real pixels) and JPEG records (256x256 crops of
the photograph that ships with matplotlib, quality 90: ~20 KB each, 64 distinct ones repeated).
Times random reads of each (replicate.data.readrate: the `data io-rate` command's code) with 1,
the available CPUs and 4x as many readers, then the means: `view_mean`, the function `data
prepare` runs once per training set, over a shuffled view of --mean-records records, from the
page cache and cold (one process, as each set's mean runs in one).  Prints the figures and their
extrapolation to the paper's ~10.4 M training-set entries (22 sets; the largest, whole_train,
1,281,167 records, runs in one process).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import matplotlib.cbook
import numpy as np
from PIL import Image

from replicate.data.cpus import available_cpus
from replicate.data.readrate import drop_cache, measure
from replicate.data.splits import ImageList
from replicate.data.store import INDEX_DTYPE, VERSION, Store
from replicate.data.view import view_mean, write_view
from replicate.machine import cpu_model

MEANS_ENTRIES = 10_400_000  # the paper's training sets, each read once for its mean
WHOLE_TRAIN = 1_281_167
RAW_BYTES = 3 * 256 * 256


def _jpegs(count: int, rng: np.random.Generator) -> list[bytes]:
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    out = []
    for _ in range(count):
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.4, 1.0))
        x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        buffer = io.BytesIO()
        photo.crop((x, y, x + side, y + side)).resize((256, 256), Image.BILINEAR).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def synthetic_store(folder: Path, fmt: str, count: int, rng: np.random.Generator) -> Store:
    """A finished store of `count` train records in the layout replicate.data.store reads."""
    folder.mkdir(parents=True)
    jpegs = _jpegs(64, rng) if fmt == "jpeg" else []
    index = np.zeros(count, INDEX_DTYPE)
    offset = 0
    with open(folder / "data.bin", "wb") as f:
        for i in range(count):
            record = rng.bytes(RAW_BYTES) if fmt == "raw" else jpegs[i % len(jpegs)]
            f.write(record)
            index[i] = (offset, len(record), i % 1000, 0, 3, 256, 256)
            offset += len(record)
    np.save(folder / "index.npy", index)
    (folder / "names.txt").write_text("".join(f"train/s{i:08d}.JPEG\n" for i in range(count)))
    (folder / "failed.txt").write_text("")
    (folder / "store.json").write_text(json.dumps({
        "version": VERSION, "format": fmt, "resize": [256, 256], "quality": 90, "color": True,
        "fingerprint": "synthetic", "records": count, "failed": 0, "parts": {"train": count, "val": 0},
        "bytes": offset}))
    return Store(folder)


def mean_rates(store: Store, records: int, folder: Path) -> dict[str, float]:
    """Records/s of view_mean over a shuffled view of `records` records, warm then cold, and the
    CPU seconds per record of each pass (this process's: a loaded machine's wall time is not)."""
    folder.mkdir()
    names = [f"s{i:08d}.JPEG" for i in range(records)]
    write_view(folder, "bench_train", ImageList("bench", names, np.zeros(records, np.int64)), "train", store,
               store.records_of("train"), 0)
    rates = {}
    view_mean(folder)  # into the page cache
    for cache in ("warm", "cold"):
        if cache == "cold":
            drop_cache(store.path / "data.bin")
        start, cpu = time.perf_counter(), time.process_time()
        view_mean(folder)
        rates[cache] = records / (time.perf_counter() - start)
        rates[f"{cache}_cpu_s_per_record"] = (time.process_time() - cpu) / records
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="an empty folder on the file system to measure")
    parser.add_argument("--raw-records", type=int, default=20000)
    parser.add_argument("--jpeg-records", type=int, default=50000)
    parser.add_argument("--mean-records", type=int, default=4000)
    parser.add_argument("--sample-records", type=int, default=2000, help="records per timed read pass")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    root = Path(args.dir)
    rng = np.random.default_rng(0)
    cpus = available_cpus()
    threads = sorted({1, cpus, 4 * cpus})
    report: dict = {"cpu": cpu_model(), "cpus": cpus, "stores": {}}
    print(f"{cpu_model()}, {cpus} CPUs; stores in {root}")
    for fmt, count in (("raw", args.raw_records), ("jpeg", args.jpeg_records)):
        started = time.perf_counter()
        store = synthetic_store(root / f"{fmt}_store", fmt, count, rng)
        size = int(store.meta["bytes"])
        print(f"{fmt}: {count} records, {size / count:,.0f} bytes each, {size / 1e9:.2f} GB written in "
              f"{time.perf_counter() - started:.0f} s")
        sample = args.sample_records if fmt == "raw" else 4 * args.sample_records
        rates = measure(store, threads, sample)
        for r in rates:
            print(f"  read {r.cache} x{r.threads}: {r.bytes_per_s / 1e6:,.0f} MB/s, {r.records_per_s:,.0f} records/s "
                  f"({100 * r.resident_before:.0f}% cached before)")
        means = mean_rates(store, min(args.mean_records, count), root / f"{fmt}_view")
        print(f"  view_mean, one process: {means['warm']:,.0f} records/s from the page cache "
              f"({1e3 * means['warm_cpu_s_per_record']:.2f} ms CPU each), {means['cold']:,.0f} cold "
              f"({1e3 * means['cold_cpu_s_per_record']:.2f} ms CPU each)")
        cpu_rate = 1 / means["warm_cpu_s_per_record"]
        total_bytes = MEANS_ENTRIES * size / count
        print(f"  means at full scale: {MEANS_ENTRIES / 1e6:.1f} M records = {total_bytes / 1e12:.2f} TB read; "
              f"{MEANS_ENTRIES / cpu_rate / 3600:.1f} CPU-hours; whole_train's mean alone (one process): "
              f"{WHOLE_TRAIN / cpu_rate / 60:.0f} min of CPU, {WHOLE_TRAIN / means['cold'] / 60:.0f} min at this "
              "cold wall rate")
        report["stores"][fmt] = {"records": count, "bytes": size, "reads": [r.as_dict() for r in rates],
                                 "mean_records_per_s": means}
        store.close()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
