"""What a run's loads of weights say that a reader of its numbers must know.

A transfer net's numbers mean what its name says only if its base's layers were copied into it.
Our trainer records every load (metrics.jsonl's config records: which files, which of the net's
learnable layers were copied, which were not, which were accepted knowingly with
--allow-missing-layers).  A generated net's manifest names the file it must start from (its
base's final snapshot); a start from another file, or from the fillers (`train --weights` of
another net, `--from-scratch`), makes it another experiment than its name.  The layers a
generated net leaves at their fillers on purpose are the ones its manifest lists as renamed
(`-new`); any other layer not copied makes the copy partial.  A run dir without a manifest
states no purpose, so every layer it did not copy counts.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path, PurePath

from replicate.io.binary import file_digest
from replicate.results.runs import Net


def _same_snapshot(recorded: str, meant: str) -> bool:
    """Whether a file the run loaded is the one its manifest names.  The two paths were written
    from different folders (the trainer's working directory; the net's folder, `../half0A/...`),
    so the recorded one must end with the manifest's path below its `..`s."""
    below = [part for part in PurePath(meant).parts if part not in ("..", ".")]
    return list(PurePath(recorded).parts[-len(below):]) == below


@functools.lru_cache(maxsize=64)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    """`file_digest`, once per version of a file (ten base snapshots of 244 MB serve 138 nets)."""
    return file_digest(path)


def _digest_now(path: Path) -> str | None:
    """The sha256 of the file at `path` now; None where it is gone (pruned, moved: no evidence)."""
    try:
        stat = path.stat()
        return _sha256(str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return None


def start_warning(net: Net) -> str | None:
    """Why `net` did not start from the weights its manifest names, if it did not: another file,
    the fillers, or the named file as it was before it was replaced (its base trained again)."""
    meant = net.manifest.get("weights")
    start = net.curve.start
    if not meant or start is None:
        return None
    load = start.get("weights")
    files = (load.get("files") or []) if isinstance(load, dict) else []
    source = f" ({net.manifest['weights_from']})" if net.manifest.get("weights_from") else ""
    for index, file in enumerate(files):
        if _same_snapshot(str(file), str(meant)):
            digests = load.get("sha256") or []
            loaded = digests[index] if index < len(digests) else None  # runs of older versions: none
            now = _digest_now(Path(os.path.normpath(Path(net.source) / meant))) if loaded else None
            if now is not None and now != loaded:
                return (f"started from {meant}{source} as its manifest says, but that file has been replaced "
                        "since (its base trained again?): its numbers are of the earlier base")
            return None
    started = f"started from {', '.join(map(str, files))}" if files else "started from the fillers"
    return f"{started}, not from {meant}{source} as its manifest says"


def copy_warnings(net: Net) -> list[str]:
    """One line per load of `net` whose copy was partial or accepted knowingly, and one if it did
    not start from the weights its manifest names."""
    meant_fresh = set(net.manifest.get("renamed_layers") or ())
    warnings = [warning] if (warning := start_warning(net)) else []
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
