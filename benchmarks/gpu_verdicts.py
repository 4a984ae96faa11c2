"""The GPU test tier's outcome and issue 20's goals, each met, not met or not measured, from what
benchmarks/gpu_session.sh wrote.

  python benchmarks/gpu_verdicts.py /tmp/gpu_session

Reads gpu_tests.log (pytest's summary line of the tier), step_<precision>.json (our compiled step and the peer's, one `bench --peer` run each),
replay.json (the compiled e2e replay), loaders_<workers>.json (`bench --loaders-only`) and
e2e_<precision>.json (`bench --skip-loaders` over the raw view).  The absolute figures are the
H200's (issue 20); on another device they are shown without a verdict.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

PEER_GOAL = 1.2
H200_STEP = {"fp32": 10_400, "tf32": 22_400, "bf16": 30_700}
RAW_VIEW_GOAL, JPEG_VIEW_GOAL = 20_000, 35_000
CEILING_GOAL, SCALING_GOAL, END_TO_END_GOAL = 40_000, 1.7, 0.9


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def _verdict(value: float | None, goal: float) -> str:
    return "not measured" if value is None else "met" if value >= goal else "not met"


def _loaders(folder: Path) -> dict[int, dict[str, Any]]:
    """{workers: bench report} of every loaders_<workers>.json."""
    found = {}
    for path in folder.glob("loaders_*.json"):
        report = _load(folder, path.name)
        if report is not None:
            found[int(path.stem.split("_")[1])] = report
    return found


def _view(report: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((e for e in report["loaders"] if e["kind"] == kind), None)


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) else None


def _tier(folder: Path) -> tuple[str, str, str]:
    """The GPU tier's row: pytest's last summary line ("80 passed, 2 skipped in 95.1s")."""
    try:
        lines = (folder / "gpu_tests.log").read_text().splitlines()
    except OSError:
        return ("GPU test tier (pytest -m gpu) passes", "-", "not measured")
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed|error|skipped)", line)), None)
    if summary is None:  # cut off at its cap: what its per-test lines (-v) say so far
        counts = {word: sum(f" {word.upper()}" in line for line in lines) for word in ("passed", "failed", "error")}
        so_far = ", ".join(f"{n} {word}" for word, n in counts.items() if n) or "no test finished"
        return ("GPU test tier (pytest -m gpu) passes", f"cut off: {so_far}", "not met")
    failed = re.search(r"\d+ (failed|error)", summary)
    if not failed and any("no CUDA device here" in line for line in lines):  # gpu_tier.tier_device's skip
        return ("GPU test tier (pytest -m gpu) passes", f"{summary}: torch saw no CUDA device", "not met")
    return ("GPU test tier (pytest -m gpu) passes", summary, "not met" if failed else "met")


def verdicts(folder: Path) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = [_tier(folder)]
    for precision in ("bf16", "fp32", "tf32"):
        report = _load(folder, f"step_{precision}.json")
        if report is None:
            if precision != "tf32":
                rows.append((f"{precision}: compiled step >= {PEER_GOAL}x the compiled peer", "-", "not measured"))
            continue
        ours = next((r for r in report["step"] if r["compile"]), None)
        peer = next((r for r in report["peer"] if r["compile"] and r["channels_last"] == (ours or {}).get("channels_last")),
                    None)
        ratio = ours["images_per_s"] / peer["images_per_s"] if ours and peer else None
        shown = f"{ours['images_per_s']:,.0f} / {peer['images_per_s']:,.0f} = {ratio:.2f}x" if ratio else "-"
        rows.append((f"{precision}: compiled step >= {PEER_GOAL}x the compiled peer", shown, _verdict(ratio, PEER_GOAL)))
        s2d = _load(folder, f"s2d_{precision}.json")
        blocks = next((r for r in s2d["step"] if r["compile"]), None) if s2d else None
        if ours and blocks:
            rows.append((f"{precision}: conv1 as space-to-depth (S2D=1) against our compiled step",
                         f"{blocks['images_per_s']:,.0f} / {ours['images_per_s']:,.0f} = "
                         f"{blocks['images_per_s'] / ours['images_per_s']:.2f}x", "information"))
        if ours:
            h200 = "H200" in report["device_name"]
            rows.append((f"{precision}: step >= {H200_STEP[precision]:,} img/s (H200)", f"{ours['images_per_s']:,.0f}",
                         _verdict(ours["images_per_s"], H200_STEP[precision]) if h200 else "H200 figure, not this device"))
    replay = _load(folder, "replay.json")
    rows.append(("compiled e2e replay (fp32) within 1e-5 of Caffe",
                 "-" if replay is None else f"log {replay['max_relative_log_error']:.1e}, snapshots "
                                            f"{replay['max_relative_snapshot_error']:.1e}",
                 "not measured" if replay is None else "met" if replay["within_1e-5"] else "not met"))
    loaders = _loaders(folder)
    most = max(loaders, default=None)
    for kind, goal in (("view-raw", RAW_VIEW_GOAL), ("view-jpeg", JPEG_VIEW_GOAL)):
        entry = _view(loaders[most], kind) if most else None
        rate = _number(entry["images_per_s"].get(f"gpu_workers_{most}")) if entry else None
        rows.append((f"{kind}, GPU path + {most} workers >= {goal:,} img/s", "-" if rate is None else f"{rate:,.0f}",
                     _verdict(rate, goal)))
        if rate is not None:
            path = f"gpu_workers_{most}"
            rows.append((f"{kind}, GPU path + {most} workers: same batch as serial, slots page-locked",
                         f"max diff {entry.get('max_abs_diff_vs_serial', {}).get(path)}, "
                         f"pinned {entry.get('pinned', {}).get(path)}", "information"))
            # The training process's CPU per image bounds the path when its ceiling nears the rate:
            # then the loader thread (receiving, nvjpeg's host stage, launches) is what to profile.
            # CUDA's spin-waits count as CPU too, so a ceiling near the rate is a lead, not proof.
            ceiling = _number(entry["consumer_ceiling_images_per_s"].get(path))
            rows.append((f"{kind}, GPU path + {most} workers: the training process's CPU ceiling",
                         "-" if ceiling is None else f"{ceiling:,.0f} img/s ({rate / ceiling:.0%} of it used)",
                         "information"))
            decoder = _number(entry["images_per_s"].get("device_decode_only"))
            if decoder is not None:  # nvjpeg runs in the loader thread and waits for the device
                rows.append((f"{kind}: the device's JPEG decoder alone, the GPU path's ceiling",
                             f"{decoder:,.0f} img/s ({rate / decoder:.0%} of it reached)", "information"))
        for n in sorted(loaders):
            entry = _view(loaders[n], kind)
            ceiling = _number(entry["consumer_ceiling_images_per_s"].get(f"workers_{n}")) if entry else None
            rows.append((f"{kind}, {n} CPU workers: one consumer core's ceiling >= {CEILING_GOAL:,} img/s",
                         "-" if ceiling is None else f"{ceiling:,.0f}", _verdict(ceiling, CEILING_GOAL)))
        if 1 in loaders and most and most > 1:
            one, all_ = (_view(loaders[n], kind) for n in (1, most))
            rates = [_number(e["images_per_s"].get(f"workers_{n}")) if e else None for e, n in ((one, 1), (all_, most))]
            scale = rates[1] / rates[0] if None not in rates else None
            rows.append((f"{kind}: {most} CPU workers / 1 (2-core goal: 2 workers >= {SCALING_GOAL}x)",
                         "-" if scale is None else f"{scale:.2f}x", "information"))
    raw_loader = None
    if most:
        entry = _view(loaders[most], "view-raw")
        raw_loader = _number(entry["images_per_s"].get(f"gpu_workers_{most}")) if entry else None
    for precision in ("bf16", "fp32", "tf32"):
        report = _load(folder, f"e2e_{precision}.json")
        if report is None:
            if precision != "tf32":
                rows.append((f"{precision}: end to end >= {END_TO_END_GOAL:.0%} of min(step, loader)", "-",
                             "not measured"))
            continue
        e2e = report["end_to_end"][0]["images_per_s"] if report["end_to_end"] else None
        step = report["step"][0]["images_per_s"] if report["step"] else None
        bound = min(x for x in (step, raw_loader) if x is not None) if step or raw_loader else None
        share = e2e / bound if e2e and bound else None
        shown = "-" if share is None else (f"{e2e:,.0f} of min(step {step:,.0f}, loader "
                                           f"{raw_loader:,.0f})" if raw_loader else f"{e2e:,.0f} of step {step:,.0f}")
        rows.append((f"{precision}: end to end >= {END_TO_END_GOAL:.0%} of min(step, loader)",
                     shown + ("" if share is None else f" = {share:.0%}"), _verdict(share, END_TO_END_GOAL)))
    return rows


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpu_session")
    rows = verdicts(folder)
    width = max(len(goal) for goal, _, _ in rows)
    print("the GPU tier and issue 20's goals:")
    for goal, measured, verdict in rows:
        print(f"  {goal:<{width}}  {measured:<40}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
