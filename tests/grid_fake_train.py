"""A stand-in trainer that keeps the `train` contract, for testing the grid without the solver.

`grid_fake_train.py solver.prototxt [--weights W] [--snapshot S] [--force] [--device D]
[--snapshot-keep K]`, run in the net's folder, writes what `python -m replicate train` writes:
train.log, metrics.jsonl ending with `{"kind": "done"}` and `<prefix>_iter_N.caffemodel/.solverstate`
every `snapshot` iterations and at max_iter (the caffemodel a real one, a one-value blob for every
layer of the solver's net, where that net's file exists: the grid reads a base's layers).  On
SIGINT it snapshots and exits 0, as Caffe does; on SIGTERM or SIGUSR2 it snapshots and exits 75
(requeue), as `train` does.
`fake.json` in the folder may ask for {"fail_at": N} (exit 1 with an error at iteration N),
{"sigterm_after": K, "sigterm_runs": R} (a SIGTERM from outside, K iterations after each of its
first R starts; R omitted: every start),
{"step_s": seconds} or {"probe_cpus": true} (record the data workers and torch threads the real
trainer would start here: replicate's own sizing, at the cost of importing torch); every run
appends its arguments, GPU, CPUs (affinity and REPLICATE_CPUS) and times to invocations.jsonl.  Like
`train`, it refuses to start fresh over an earlier run's logs unless given --force.
"""

import argparse
import json
import os
import re
import signal
import sys
import time
from datetime import datetime


def setting(text: str, key: str, default=None):
    match = re.search(rf"^\s*{key}\s*:\s*\"?([^\"\n]+)\"?\s*$", text, re.M)
    return match.group(1) if match else default


def main() -> int:
    # Like `train`, a signal asks for a stop that comes between iterations, after the iteration
    # under way has been recorded (so the snapshot is at the last recorded iteration); SIGINT is
    # handled even when started from a shell that ignores it for background jobs.
    stop: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, lambda signum, frame: stop.append(signum))
    parser = argparse.ArgumentParser()
    parser.add_argument("solver")
    parser.add_argument("--weights")
    parser.add_argument("--snapshot")
    parser.add_argument("--device")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--snapshot-keep", type=int)
    args = parser.parse_args()
    text = open(args.solver).read()
    max_iter = int(setting(text, "max_iter"))
    every = int(setting(text, "snapshot", "0"))
    prefix = os.path.join(os.path.dirname(os.path.abspath(args.solver)), setting(text, "snapshot_prefix"))
    config = json.load(open("fake.json")) if os.path.exists("fake.json") else {}
    started = time.time()
    seen = {"argv": sys.argv[1:], "cwd": os.getcwd(), "start": started, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "affinity": sorted(os.sched_getaffinity(0)), "cpus": os.environ.get("REPLICATE_CPUS"),
            "omp_threads": os.environ.get("OMP_NUM_THREADS"), "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "slurm_gpus": os.environ.get("SLURM_JOB_GPUS")}
    if config.get("probe_cpus"):
        import torch

        from replicate.data.pool import workers_per_process

        seen.update(data_workers=workers_per_process(), torch_threads=torch.get_num_threads())
    with open("invocations.jsonl", "a") as f:
        f.write(json.dumps(seen) + "\n")
    if args.weights and not os.path.exists(args.weights):
        print(f"error: {args.weights}: cannot read", file=sys.stderr)
        return 2
    it = int(re.search(r"_iter_(\d+)\.solverstate$", args.snapshot).group(1)) if args.snapshot else 0
    trained = os.path.exists("metrics.jsonl") and '"iter":' in open("metrics.jsonl").read()
    if not args.snapshot and not args.force and trained:
        print("error: this folder already holds a run; resume with --snapshot or add --force", file=sys.stderr)
        return 2
    mode = "w" if args.force else "a"
    log = open("train.log", mode)
    metrics = open("metrics.jsonl", mode)

    net_file = setting(text, "train_net") or setting(text, "net")

    def snap(n: int) -> None:
        for ext in (".caffemodel", ".solverstate"):
            with open(f"{prefix}_iter_{n}{ext}", "w") as f:
                f.write(f"iter {n}\n")
        if net_file and os.path.isfile(net_file):
            from replicate.io.model import load_net, save_caffemodel

            net = load_net(net_file)
            for layer in net.layer:
                layer.blobs.add().data.append(float(n))
            save_caffemodel(f"{prefix}_iter_{n}.caffemodel", net)

    def record(obj: dict) -> None:
        metrics.write(json.dumps(obj) + "\n")
        metrics.flush()

    starts = sum('"argv"' in line for line in open("invocations.jsonl"))
    stray = config.get("sigterm_after") if starts <= config.get("sigterm_runs", starts) else None
    first = it
    while it < max_iter and not stop:
        time.sleep(config.get("step_s", 0.0))
        if stray is not None and it == first + stray:
            os.kill(os.getpid(), signal.SIGTERM)
            continue
        if it == config.get("fail_at"):
            print(f"RuntimeError: fake failure at iteration {it}", file=sys.stderr)
            return 1
        it += 1
        stamp = datetime.now().strftime("%m%d %H:%M:%S.%f")
        log.write(f"I{stamp} {os.getpid()} solver.cpp:218] Iteration {it}, loss = {1.0 / it}\n")
        log.flush()
        record({"iter": it, "kind": "train", "lr": 0.01, "loss": 1.0 / it})
        record({"iter": it, "kind": "test", "net": 0, "outputs": {"accuracy": it / (2 * max_iter), "loss": 1.0}})
        if every and it % every == 0 and it < max_iter:
            snap(it)
    if it < max_iter:
        snap(it)
        if stop[0] == signal.SIGINT:
            print("Optimization stopped early.", file=sys.stderr)
            return 0
        record({"kind": "stopped", "iter": it, "requeue": True})
        return 75
    snap(max_iter)
    record({"kind": "done", "iter": max_iter})
    with open("invocations.jsonl", "a") as f:
        f.write(json.dumps({"end": time.time()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
