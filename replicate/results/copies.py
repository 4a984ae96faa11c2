"""What a run's loads of weights say that a reader of its numbers must know.

A transfer net's numbers mean what its name says only if its base's layers were copied into it.
Our trainer records every load (metrics.jsonl's config records: which of the net's learnable
layers were copied, which were not, which were accepted knowingly with --allow-missing-layers).
The layers a generated net leaves at their fillers on purpose are the ones its manifest lists as
renamed (`-new`); any other layer not copied makes the copy partial.  A run dir without a
manifest states no purpose, so every layer it did not copy counts.
"""

from __future__ import annotations

from replicate.results.runs import Net


def copy_warnings(net: Net) -> list[str]:
    """One line per load of `net` whose copy was partial or accepted knowingly."""
    meant_fresh = set(net.manifest.get("renamed_layers") or ())
    warnings = []
    for load in net.curve.loads:
        files = ", ".join(load.get("files") or ()) or "no file"
        accepted, empty = load.get("accepted") or [], load.get("empty_files") or []
        partial = [name for name in load.get("not_copied") or () if name not in meant_fresh]
        if accepted:
            warnings.append(f"copy accepted knowingly (--allow-missing-layers): {', '.join(accepted)} "
                            f"not copied from {files}")
        elif empty:
            warnings.append(f"copy accepted knowingly (--allow-missing-layers): {', '.join(empty)} "
                            "supplied no layer")
        elif partial:
            warnings.append(f"partial copy: {', '.join(partial)} not copied from {files}")
    return warnings
