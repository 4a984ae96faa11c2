"""A bench report (the JSON `bench` writes) as Markdown tables, ready for the README.

Goals, for one H100 or H200 at batch 256: the first GPU issue's fp32 >= 5,000 images/s, tf32 >=
10,000, bf16 >= 20,000, and end to end >= 80% of the best synthetic figure of the same precision;
the second's: each precision >= 1.2x the compiled plain-PyTorch peer's images/s in the same run.
"""

from __future__ import annotations

from typing import Any

GOALS = {"fp32": 5000, "tf32": 10000, "bf16": 20000}
END_TO_END_GOAL = 0.8
PEER_GOAL = 1.2


def _setting(r: dict[str, Any]) -> str:
    parts = [name for name, on in (("channels_last", r["channels_last"]), ("compile", r["compile"]),
                                   ("space_to_depth", r.get("space_to_depth"))) if on]
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


def _peer_rows(report: dict[str, Any]) -> list[str]:
    """Our step against the peer's, eager and compiled, at the same precision and layout."""
    peers = {(r["precision"], r["channels_last"], bool(r["compile"])): r for r in report["peer"]}
    lines = [
        "",
        "| precision | our setting | ours, images/s | peer eager | peer compiled | ours / peer compiled | "
        f"goal >= {PEER_GOAL}x |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["step"]:
        eager, compiled = (peers.get((r["precision"], r["channels_last"], c)) for c in (False, True))
        if eager is None and compiled is None:
            continue
        shown = [f"{p['images_per_s']:,.0f}" if p else "n/a" for p in (eager, compiled)]
        ratio = r["images_per_s"] / compiled["images_per_s"] if compiled else None
        verdict = ("met" if ratio >= PEER_GOAL else "not met") if ratio is not None else ""
        lines.append(f"| {r['precision']} | {_setting(r)} | {r['images_per_s']:,.0f} | {shown[0]} | {shown[1]} | "
                     f"{f'{ratio:.2f}x' if ratio is not None else 'n/a'} | {verdict} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The step, peer, test-pass, end-to-end and loader tables with the device, versions and batch."""
    batch = report["settings"]["batch"]
    lines = [
        f"Device: {report['device_name']} ({report['device']}); CPU {report.get('cpu', 'unknown')}; torch "
        f"{report['torch']}, CUDA {report['cuda']}, cuDNN {report['cudnn']}; batch {batch}; mean of "
        f"{report['settings']['iterations']} steps after {report['settings']['warmup']} warm-up steps; "
        f"{report.get('date', 'undated')}; `{report.get('command')}`.",
    ]
    if report["step"]:
        lines += [
            "",
            "| precision | setting | one graph | host syncs | ms/step | images/s | TFLOP/s | of peak | goal (H100) |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
    for r in report["step"]:
        goal = GOALS.get(r["precision"])
        verdict = f">= {goal:,}: {'met' if r['images_per_s'] >= goal else 'not met'}" if goal else ""
        graph = "yes, CUDA graph" if r.get("cuda_graph") else "yes" if r.get("one_graph") else "no"
        syncs = {True: "yes", False: "none", None: "n/a"}[r.get("waits_for_device")]
        lines.append(
            f"| {r['precision']} | {_setting(r)} | {graph} | {syncs} | {r['ms_per_step']:.1f} | "
            f"{r['images_per_s']:,.0f} | {r['achieved_tflops']:.1f} | {_peak(r)} | {verdict} |"
        )
    if report.get("peer"):
        lines += _peer_rows(report)
    if report.get("test_pass"):
        lines += ["", "| test pass | setting | batches x images | seconds | images/s |", "| --- | --- | ---: | ---: | ---: |"]
        for r in report["test_pass"]:
            lines.append(f"| {r['precision']} | {_setting(r)} | {r['test_iter']} x {r['batch']} | {r['seconds']:.1f} | "
                         f"{r['images_per_s']:,.0f} |")
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
        lines += ["", "| loader | records | images/s | training process's CPU µs per image |", "| --- | ---: | --- | --- |"]
        for e in report["loaders"]:
            rates = ", ".join(
                f"{k.replace('_', ' ')} {v:,.0f}" if isinstance(v, float) else f"{k.replace('_', ' ')}: {v}"
                for k, v in e["images_per_s"].items()
            )
            costs = ", ".join(f"{k.replace('_', ' ')} {1e6 * v:.1f}"
                              for k, v in e.get("consumer_cpu_s_per_image", {}).items() if isinstance(v, float))
            lines.append(f"| {e['kind']} {e['source']} | {e['records']} | {rates} | {costs} |")
    return "\n".join(lines) + "\n"
