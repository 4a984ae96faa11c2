"""CPU forward+backward time of the paper's CaffeNet (batch 16, every layer learning).

  python benchmarks/cpu_caffenet.py [--iterations 10] [--threads 2] [--phase TRAIN]

Reference points on the 2-core development box: real Caffe (OpenBLAS) 484 ms, a plain PyTorch
nn.Sequential CaffeNet 540 ms; target <= 242 ms.  Measured here (Nov 2026, box shared with other
jobs, so +-10%): median 208-218 ms; 255-265 ms with `--malloc-default`.  One iteration = CompiledNet forward on
random data + loss.backward(), as a training step minus the solver update.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from replicate.io.prototxt import read_net_text
from replicate.net.compile import CompiledNet
from replicate.net.cpu_memory import keep_freed_memory
from replicate.proto import caffe_pb2

NET = Path(__file__).with_name("caffenet_train.prototxt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase", choices=["TRAIN", "TEST"], default="TRAIN")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc malloc as is (to measure what keep_freed_memory saves)")
    args = parser.parse_args()
    if not args.malloc_default:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = CompiledNet(read_net_text(NET), getattr(caffe_pb2, args.phase))
    inputs = {
        "data": torch.randn(net.blob_shapes["data"]) * 50,
        "label": torch.randint(0, 1000, net.blob_shapes["label"]).float(),
    }
    params = [e.param for e in net.learnable_params()]

    def step() -> float:
        for p in params:
            p.grad = None
        start = time.perf_counter()
        net(inputs).loss.backward()
        return (time.perf_counter() - start) * 1000

    for _ in range(2):
        step()
    times = [step() for _ in range(args.iterations)]
    print(f"threads={args.threads} batch={net.blob_shapes['data'][0]} iterations={args.iterations}")
    print(f"forward+backward ms: median {statistics.median(times):.1f}  mean {statistics.mean(times):.1f}  "
          f"min {min(times):.1f}  max {max(times):.1f}")


if __name__ == "__main__":
    main()
