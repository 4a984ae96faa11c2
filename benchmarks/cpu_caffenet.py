"""CPU forward+backward time of the paper's CaffeNet (batch 16, every layer learning).

  python benchmarks/cpu_caffenet.py [--iterations 10] [--threads N] [--phase TRAIN]

One iteration = CompiledNet forward on random data + loss.backward(), as a training step minus
the solver update.  It prints the CPU (machine.cpu_model), the torch version and the thread
count, then the median wall time and the median CPU time (user+sys of the whole process) per
iteration.  On a shared machine quote the CPU time of a one-thread run: wall time there measures
the other jobs too, and with several threads CPU time counts OpenMP's waiting as well.

How it differs from `python -m replicate time --model benchmarks/caffenet_train.prototxt`: `time`
runs each layer on detached copies of its bottoms and times its forward and backward apart (as
`caffe time` does) and reports means; this script times the whole pass in one autograd graph,
as training runs it, and reports medians.  Both use torch's default thread count (here --threads
changes it) and keep freed memory in the process (net/cpu_memory.py); with one thread their CPU
times per iteration agree within the shared machine's noise (figures below).

Measured on an AMD EPYC (family 25, model 17: Zen 4, AVX-512), torch 2.13.0+cpu, one thread,
2 cores shared with other jobs (load 5-11), CPU time per iteration: this script 750-830 ms
(`time`, by difference of whole-process CPU over 1 and 10 iterations, 700-810 ms); real Caffe
(BVLC master, Debian's OpenBLAS 0.3.21, `caffe time`, one OpenBLAS thread, the same difference)
980-1070 ms; ratio in the same run 0.76-0.77.  The README's CPU section explains the gap to the older 208-218 ms figure
(an Intel CPU, two threads) and why half of Caffe's time is out of reach on a Zen core.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from replicate.io.prototxt import read_net_text
from replicate.machine import cpu_model
from replicate.net.compile import CompiledNet
from replicate.net.cpu_memory import keep_freed_memory
from replicate.proto import caffe_pb2

NET = Path(__file__).with_name("caffenet_train.prototxt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--phase", choices=["TRAIN", "TEST"], default="TRAIN")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc malloc as is (to measure what keep_freed_memory saves)")
    args = parser.parse_args()
    if not args.malloc_default:
        keep_freed_memory()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = CompiledNet(read_net_text(NET), getattr(caffe_pb2, args.phase))
    inputs = {
        "data": torch.randn(net.blob_shapes["data"]) * 50,
        "label": torch.randint(0, 1000, net.blob_shapes["label"]).float(),
    }
    params = [e.param for e in net.learnable_params()]

    def step() -> tuple[float, float]:
        for p in params:
            p.grad = None
        wall, cpu = time.perf_counter(), time.process_time()
        net(inputs).loss.backward()
        return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000

    for _ in range(2):
        step()
    walls, cpus = zip(*(step() for _ in range(args.iterations)))
    print(f"{cpu_model()}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"batch={net.blob_shapes['data'][0]}, iterations={args.iterations}")
    print(f"forward+backward ms: median {statistics.median(walls):.1f}  mean {statistics.mean(walls):.1f}  "
          f"min {min(walls):.1f}  max {max(walls):.1f}")
    print(f"CPU ms (user+sys) per iteration: median {statistics.median(cpus):.1f}")


if __name__ == "__main__":
    main()
