"""Where a compiled CaffeNet step's time goes: kernel time per step, ours against the peer's.

  python benchmarks/profile_step.py --out /tmp/gpu_session/profile --precision bf16 fp32

For each precision: our step (channels_last, the one compiled iteration, its CUDA graph off so
the profiler sees every kernel) and the plain-PyTorch peer compiled (replicate.bench.peer), 5
profiled steps after warm-up.  Writes profile_<who>_<precision>.txt (the kernels by GPU time,
per step) and profile.json (per setting: wall ms per step, kernel ms per step, and the share of
the kernels grouped as convolution, GEMM, Triton (fused pointwise, LRN, pooling), cuDNN's layout
kernels (nhwcSliceC / AddPadding, the grouped convolutions' price), reductions, copies and
others).  What issue 20 item 3 needs from a GPU: whether the step is bound by its kernels (kernel
ms close to wall ms) and which kernels cost more in ours than in the peer.  On the CPU it profiles
operators instead (a dry run).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
import torch._dynamo
from torch.profiler import ProfilerActivity, profile

from replicate.bench.peer import peer_step
from replicate.bench.step import caffenet, ms_per_call, run_iterations, solver_param, sync, synthetic_batch
from replicate.solver.log import RunLog
from replicate.solver.solver import Solver

GROUPS = (("layout (cuDNN nhwcSlice/AddPadding)", ("nhwcslice", "nhwcaddpadding")),
          ("convolution", ("conv", "implicitgemm", "fprop", "dgrad", "wgrad", "cudnn")),
          ("GEMM", ("gemm", "sm90_xmma", "cutlass", "cublas")),
          ("Triton (fused)", ("triton",)),
          ("reduction", ("reduce",)),
          ("copy", ("copy",)))


def _group(name: str) -> str:
    low = name.lower()
    return next((group for group, keys in GROUPS if any(k in low for k in keys)), "other")


def record(name: str, step: Callable[[], None], device: torch.device, out: Path, steps: int = 5) -> dict:
    wall_ms = ms_per_call(step, device, warmup=3, iterations=steps)
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(steps):
            step()
        sync(device)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    events = prof.key_averages()
    (out / f"profile_{name}.txt").write_text(events.table(sort_by=key, row_limit=40, max_name_column_width=100))
    groups: dict[str, float] = defaultdict(float)
    for event in events:
        us = getattr(event, "self_device_time_total" if cuda else "self_cpu_time_total", 0.0)
        if cuda and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        groups[_group(event.key)] += us / steps / 1000
    kernel_ms = sum(groups.values())
    summary = {"wall_ms_per_step": wall_ms, "kernel_ms_per_step": kernel_ms,
               "share": {g: ms / kernel_ms for g, ms in sorted(groups.items(), key=lambda x: -x[1])} if kernel_ms else {}}
    print(name, json.dumps(summary), flush=True)
    return summary


def ours(device: torch.device, batch: int, precision: str, backend: str) -> tuple[Callable[[], None], Solver]:
    torch._dynamo.reset()
    solver = Solver(solver_param(caffenet(batch), device), Path.cwd(), device, RunLog(None, None), precision,
                    channels_last=True, compile=backend, cuda_graph=False)
    inputs = synthetic_batch(batch, device, channels_last=True)
    return (lambda: run_iterations(solver, inputs, 1)), solver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: a quick dry run)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    summary = {}
    for precision in args.precision:
        step, solver = ours(device, args.batch, precision, args.backend)
        try:
            summary[f"ours_compiled_{precision}"] = record(f"ours_compiled_{precision}", step, device, args.out)
        finally:
            solver.close()
        step = peer_step(device, args.batch, precision, channels_last=True, compile=args.backend)
        summary[f"peer_compiled_{precision}"] = record(f"peer_compiled_{precision}", step, device, args.out)
    (args.out / "profile.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
