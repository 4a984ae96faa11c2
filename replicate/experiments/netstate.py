"""status.json: what the grid did with one net, kept in the net's own folder.

It is the grid's memory between runs and the only thing `grid status` needs besides the
training files: state, the process (pid, host, job id), start and end times, return code and
the last error line.  It is always replaced atomically, so a reader never sees half a record,
even while the runner is being killed.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from replicate.errors import ReplicateError
from replicate.io.binary import write_atomic

STATUS_FILE = "status.json"

# The states a net can be in; `grid status` may also show `waiting` (never started).
QUEUED, RUNNING, DONE, FAILED, BLOCKED, STOPPED = (
    "queued", "running", "done", "failed", "blocked", "stopped"
)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_status(net_dir: Path) -> dict[str, Any]:
    """The net's record, or {} when the grid never touched it."""
    path = net_dir / STATUS_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise ReplicateError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise ReplicateError(f"{path}: a status record must be a JSON object")
    return record


def write_status(net_dir: Path, state: str, **fields: Any) -> dict[str, Any]:
    """Replace the record with a new one: `state`, this host, and `fields`.

    A fresh record per change (rather than a merge) keeps a stale pid or error of an earlier
    attempt from surviving into the next one; callers pass on what must carry over."""
    record = {"state": state, "host": socket.gethostname(), "updated": now(), **fields}
    net_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(net_dir / STATUS_FILE, (json.dumps(record, indent=1) + "\n").encode())
    return record


def process_alive(record: dict[str, Any]) -> bool | None:
    """Whether the record's process still runs: None when it ran on another host (unknown)."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return None
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
