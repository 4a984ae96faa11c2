"""The resume sidecar: what a snapshot needs, beyond Caffe's two files, to continue bit for bit.

Caffe's `.solverstate` holds the iteration, the lr step and the update history; its `.caffemodel`
the weights.  Neither holds where each data layer is in its source or the state of the random
streams (crops and mirrors, dropout), so a run resumed from them alone differs from one that was
never stopped.  `<prefix>_iter_N.solverstate.resume.json` holds the rest:

- each data layer's position (its seed, its first record, the number of batches it has read), for
  the train net and every test net;
- torch's CPU generator, the CUDA generator of the training device, numpy's global generator;
- the sha256 of the `.caffemodel` and `.solverstate` it belongs to.

Caffe's files stay exactly Caffe's: real Caffe reads our snapshots, and we read real Caffe's
(which have no sidecar: the data layers then restart at their first record, as Caffe's do).

A snapshot is written caffemodel, sidecar, solverstate, each atomically (temporary file, rename):
the solverstate is the commit, so a run killed at any point leaves either no solverstate for that
iteration or a complete set.  The digests catch the one mix-up that ordering cannot: files of two
runs with the same names in one folder (a run restarted from scratch over an old one, killed
mid-snapshot), which are refused rather than loaded.  Hashing costs about 0.3 s of CPU per
snapshot at CaffeNet's size (2 x 233 MB at 1.7 GB/s).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replicate.errors import ReplicateError
from replicate.io.binary import write_atomic
from replicate.solver.outputs import SIDECAR_SUFFIX

FORMAT = "replicate-resume"
VERSION = 1


def sidecar_path(state_path: Path) -> Path:
    """`snap_iter_N.solverstate` -> `snap_iter_N.solverstate.resume.json`."""
    return state_path.with_name(state_path.name + SIDECAR_SUFFIX)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def random_states(device: torch.device) -> dict[str, Any]:
    """Every random stream training draws from: torch's CPU generator (dropout on the CPU), the
    CUDA generator of `device` (dropout on a GPU), numpy's global generator."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch_cpu": _b64(torch.get_rng_state().numpy().tobytes()),
        "numpy": {"kind": kind, "keys": _b64(np.asarray(keys, np.uint32).tobytes()), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "cuda_device": None,
        "torch_cuda": None,
    }
    if device.type == "cuda":
        states["cuda_device"] = str(device)
        states["torch_cuda"] = _b64(torch.cuda.get_rng_state(device).numpy().tobytes())
    return states


def restore_random_states(states: dict[str, Any], device: torch.device) -> str | None:
    """Set the generators `random_states` saved; a note for the log when one cannot be (a run
    saved on a GPU resumed on the CPU, or the other way round), else None."""
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(states["torch_cpu"])), dtype=torch.uint8))
    n = states["numpy"]
    keys = np.frombuffer(base64.b64decode(n["keys"]), dtype=np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if device.type == "cuda" and states["torch_cuda"] is not None:
        cuda = torch.frombuffer(bytearray(base64.b64decode(states["torch_cuda"])), dtype=torch.uint8)
        torch.cuda.set_rng_state(cuda, device)
        return None
    if device.type == "cuda" or states["torch_cuda"] is not None:
        saved = states["cuda_device"] or "cpu"
        return f"the snapshot was written on {saved}, this run is on {device}: dropout on the GPU draws afresh"
    return None


def write_sidecar(path: Path, iteration: int, model_name: str, model_bytes: bytes, state_bytes: bytes,
                  data: list[dict[str, Any]], randoms: dict[str, Any]) -> None:
    """Write the sidecar of the snapshot at `iteration` (before its solverstate: see the module)."""
    record = {
        "format": FORMAT, "version": VERSION, "iter": iteration,
        "caffemodel": {"name": Path(model_name).name, "sha256": digest(model_bytes)},
        "solverstate": {"sha256": digest(state_bytes)},
        "data": data, "random": randoms,
    }
    write_atomic(path, (json.dumps(record, indent=1) + "\n").encode())


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar at `path`, or None when there is none (a snapshot of real Caffe's)."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ReplicateError(f"{path}: unreadable resume sidecar ({err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("version") != VERSION:
        raise ReplicateError(f"{path}: not a version-{VERSION} resume sidecar of this program")
    return record


def check_belongs(record: dict[str, Any], path: Path, iteration: int, state_bytes: bytes,
                  model_path: Path, model_bytes: bytes) -> None:
    """Refuse a sidecar that is not the one written with this solverstate and caffemodel."""
    problems = []
    if record["iter"] != iteration:
        problems.append(f"it is for iteration {record['iter']}, the solverstate for {iteration}")
    if record["solverstate"]["sha256"] != digest(state_bytes):
        problems.append("the solverstate's content differs from the one it was written with")
    if record["caffemodel"]["sha256"] != digest(model_bytes):
        problems.append(f"{model_path.name}'s content differs from the one it was written with")
    if problems:
        raise ReplicateError(
            f"{path}: this snapshot's files do not belong together ({'; '.join(problems)}); "
            "they are left over from different runs: resume from another snapshot or delete these"
        )
