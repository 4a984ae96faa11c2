"""A bench report (the JSON `bench` writes) as Markdown tables, ready for the README.

Goals are the GPU issue's, for one H100 at batch 256: fp32 >= 5,000 images/s, tf32 >= 10,000,
bf16 >= 20,000, and end to end >= 80% of the best synthetic figure of the same precision.
"""

from __future__ import annotations

from typing import Any

GOALS = {"fp32": 5000, "tf32": 10000, "bf16": 20000}
END_TO_END_GOAL = 0.8


def _setting(r: dict[str, Any]) -> str:
    parts = [name for name, on in (("channels_last", r["channels_last"]), ("compile", r["compile"])) if on]
    return " + ".join(parts) or "plain"


def _peak(r: dict[str, Any]) -> str:
    return f"{100 * r['fraction_of_peak']:.1f}%" if r.get("fraction_of_peak") is not None else "n/a"


def best_steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fastest synthetic step of each precision."""
    best: dict[str, dict[str, Any]] = {}
    for r in report["step"]:
        if r["precision"] not in best or r["images_per_s"] > best[r["precision"]]["images_per_s"]:
            best[r["precision"]] = r
    return best


def markdown(report: dict[str, Any]) -> str:
    """The step, end-to-end and loader tables with the device, versions and batch."""
    batch = report["settings"]["batch"]
    lines = [
        f"Device: {report['device_name']} ({report['device']}); torch {report['torch']}, CUDA {report['cuda']}, "
        f"cuDNN {report['cudnn']}; batch {batch}; median of {report['settings']['iterations']} steps after "
        f"{report['settings']['warmup']} warm-up steps.",
        "",
        "| precision | setting | ms/step | images/s | TFLOP/s | of peak | goal (H100) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["step"]:
        goal = GOALS.get(r["precision"])
        verdict = f">= {goal:,}: {'met' if r['images_per_s'] >= goal else 'not met'}" if goal else ""
        lines.append(
            f"| {r['precision']} | {_setting(r)} | {r['ms_per_step']:.1f} | {r['images_per_s']:,.0f} | "
            f"{r['achieved_tflops']:.1f} | {_peak(r)} | {verdict} |"
        )
    if report["end_to_end"]:
        best = best_steps(report)
        lines += [
            "",
            "| end to end | setting | data workers | images/s | of synthetic | goal |",
            "| --- | --- | ---: | ---: | ---: | --- |",
        ]
        for r in report["end_to_end"]:
            share = r["images_per_s"] / best[r["precision"]]["images_per_s"]
            verdict = f">= {END_TO_END_GOAL:.0%}: {'met' if share >= END_TO_END_GOAL else 'not met'}"
            lines.append(
                f"| {r['precision']} from {r['data']} | {_setting(r)} | {r.get('data_workers', 0)} | "
                f"{r['images_per_s']:,.0f} | {share:.0%} | {verdict} |"
            )
    if report["loaders"]:
        lines += ["", "| loader | records | images/s |", "| --- | ---: | --- |"]
        for e in report["loaders"]:
            rates = ", ".join(
                f"{k.replace('_', ' ')} {v:,.0f}" if isinstance(v, float) else f"{k.replace('_', ' ')}: {v}"
                for k, v in e["images_per_s"].items()
            )
            lines.append(f"| {e['kind']} {e['source']} | {e['records']} | {rates} |")
    return "\n".join(lines) + "\n"
