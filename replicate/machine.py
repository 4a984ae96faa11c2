"""The CPU this process computes on, named beside every CPU speed figure it reports.

A CPU time means little without the CPU: an AMD Zen core (EPYC 7002-9004) retires 32 fp32 FLOP
per cycle whether its code is AVX2 or AVX-512 (two 256-bit FMA pipes), where an Intel server core
with two AVX-512 FMA units retires 64, so the same convolutions take about twice as long per
clock there.  The kernels PyTorch dispatches to (its ATen capability, which ATEN_CPU_CAPABILITY
can lower) are named too.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

_CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """E.g. "AMD EPYC (family 25, model 17), ATen AVX512": /proc/cpuinfo's first processor
    where there is one (a hypervisor may shorten the model name; family and model identify the
    core), else what `platform` knows."""
    fields: dict[str, str] = {}
    try:
        for line in _CPUINFO.read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return f"{name}, ATen {torch.backends.cpu.get_cpu_capability()}"
