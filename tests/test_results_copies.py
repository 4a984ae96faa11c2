"""The report flags nets whose copy of their starting weights was partial or accepted knowingly:
each load `train` recorded (metrics.jsonl's config records) against the layers the net's manifest
renames to start from their fillers.  Read without drawing the figures (the report's own pieces)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from replicate.results.copies import copy_warnings
from replicate.results.reference import load_reference
from replicate.results.report import _notes, _sources
from replicate.results.runs import find_runs

FRESH = ["conv4-new", "conv5-new", "fc6-new", "fc7-new", "fc8-new"]
BASE = "../half0A/snap_iter_2.caffemodel"


def _load(copied: list[str], not_copied: list[str], accepted: list[str] = (), resumed: bool = False) -> dict:
    return {"files": [BASE], "resumed": resumed, "layers": 8, "copied": copied, "not_copied": not_copied,
            "accepted": list(accepted), "empty_files": []}


def _run(root: Path, name: str, loads: list[dict | None], manifest: bool = True, weights: str | None = None) -> None:
    """A run dir whose metrics hold one config record per load (a resume adds one), each followed
    by two tests; its manifest names `weights` as the file to start from."""
    folder = root / name
    folder.mkdir()
    if manifest:
        (folder / "manifest.json").write_text(json.dumps({"name": name, "arch": "demo", "max_iter": 2,
                                                          "renamed_layers": FRESH, "weights_from": "half0A",
                                                          "weights": weights}))
    records = []
    for i, load in enumerate(loads):
        records += [{"kind": "config", "weights": load}, {"kind": "test", "iter": i, "net": 0,
                                                          "outputs": {"accuracy": 0.1}},
                    {"kind": "test", "iter": i + 1, "net": 0, "outputs": {"accuracy": 0.2}}]
    records.append({"kind": "done", "iter": len(loads)})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_partial_and_knowingly_accepted_copies_are_flagged_and_planned_ones_are_not(tmp_path: Path) -> None:
    full = _load(["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"], [], resumed=True)
    _run(tmp_path, "half0A", [None])
    _run(tmp_path, "transfer0A0B_1_3", [_load(["conv1", "conv2", "conv3"], FRESH)])
    _run(tmp_path, "transfer0B0A_1_3", [_load(["conv1", "conv2"], ["conv3", *FRESH], ["conv3"]), full])
    _run(tmp_path, "transfer-ft0A0B_1_3", [_load(["conv1", "conv3"], ["conv2", *FRESH])])
    _run(tmp_path, "handmade", [_load(["conv1"], ["conv2-mine"])], manifest=False)
    runs = find_runs(tmp_path)
    warnings = {net.name: copy_warnings(net) for net in runs.nets}
    accepted = f"copy accepted knowingly (--allow-missing-layers): conv3 not copied from {BASE}"
    partial = f"partial copy: conv2 not copied from {BASE}"
    assert warnings == {"half0A": [], "transfer0A0B_1_3": [], "transfer0B0A_1_3": [accepted],
                        "transfer-ft0A0B_1_3": [partial],
                        "handmade": [f"partial copy: conv2-mine not copied from {BASE}"]}
    net = next(n for n in runs.nets if n.name == "transfer0B0A_1_3")
    assert accepted in _notes(net, shows_loss=False)  # the net's row in the report
    text = "\n".join(_sources(runs, str(tmp_path), relative=True, paper=load_reference()))
    assert (f"**Weights not copied as the nets' names say (3):** their logs say they started from other weights "
            "than their manifests name, or that the copy of their starting weights was partial or accepted "
            "knowingly, so they may be other experiments than their names: handmade "
            f"(partial copy: conv2-mine not copied from {BASE}); transfer-ft0A0B_1_3 ({partial}); "
            f"transfer0B0A_1_3 ({accepted}).") in text


def test_a_net_started_from_other_weights_than_its_manifest_names_is_flagged(tmp_path: Path) -> None:
    """`train --weights` of another net, or `--from-scratch`, makes a transfer net another
    experiment: the report says so; the manifest's own file, however the path was written, is not
    flagged, nor a run whose logs begin with a resume (they do not say how it started)."""
    copied = ["conv1", "conv2", "conv3"]
    own = _load(copied, FRESH)
    absolute = {**own, "files": [str(tmp_path / "half0A" / "snap_iter_2.caffemodel")]}
    other = {**own, "files": ["runs/half0B/snap_iter_2.caffemodel"]}
    resumed = _load(copied + FRESH, [], resumed=True)
    _run(tmp_path, "half0A", [None])
    _run(tmp_path, "transfer0A0B_1_3", [own, resumed], weights=BASE)
    _run(tmp_path, "transfer0A0A_1_3", [absolute], weights=BASE)
    _run(tmp_path, "transfer-ft0A0B_1_3", [other], weights=BASE)
    _run(tmp_path, "transfer0B0B_1_3", [None, resumed], weights=BASE)
    _run(tmp_path, "transfer0B0A_1_3", [resumed], weights=BASE)
    warnings = {net.name: copy_warnings(net) for net in find_runs(tmp_path).nets}
    assert warnings == {
        "half0A": [], "transfer0A0B_1_3": [], "transfer0A0A_1_3": [], "transfer0B0A_1_3": [],
        "transfer-ft0A0B_1_3": [f"started from runs/half0B/snap_iter_2.caffemodel, not from {BASE} (half0A) as its "
                                "manifest says"],
        "transfer0B0B_1_3": [f"started from the fillers, not from {BASE} (half0A) as its manifest says"]}


def test_a_net_whose_base_snapshot_was_replaced_after_it_copied_it_is_flagged(tmp_path: Path) -> None:
    """`train --force` of a base after its dependants copied its final snapshot leaves them paired
    with a base they did not start from: the sha256 each start recorded tells."""
    base = tmp_path / "half0A" / "snap_iter_2.caffemodel"
    base.parent.mkdir()
    base.write_bytes(b"the base's weights")
    load = {**_load(["conv1", "conv2", "conv3"], FRESH), "sha256": [hashlib.sha256(b"the base's weights").hexdigest()]}
    _run(tmp_path, "transfer0A0B_1_3", [load], weights=BASE)
    _run(tmp_path, "transfer-ft0A0B_1_3", [{k: v for k, v in load.items() if k != "sha256"}], weights=BASE)
    warnings = lambda: {net.name: copy_warnings(net) for net in find_runs(tmp_path).nets}  # noqa: E731
    assert warnings() == {"transfer0A0B_1_3": [], "transfer-ft0A0B_1_3": []}
    base.write_bytes(b"the base trained again")
    assert warnings() == {
        "transfer0A0B_1_3": [f"started from {BASE} (half0A) as its manifest says, but that file has been replaced "
                             "since (its base trained again?): its numbers are of the earlier base"],
        "transfer-ft0A0B_1_3": []}  # a run of an older version recorded no digest: nothing to compare
    base.unlink()
    assert warnings()["transfer0A0B_1_3"] == []  # gone (pruned, moved): no evidence either way
