"""`not_compiled`: torch.compiler.disable for Python code a compiled net must run as it is, without
importing torch._dynamo when nothing compiles.

`torch.compiler.disable` imports Dynamo the moment it decorates a function: 1.5 s of CPU at the
start of every trainer (each net of a grid is one), for runs that never compile.  Until Dynamo is
loaded nothing can be tracing the call, so the plain function runs; once it is loaded (a
torch.compile somewhere in the process), the call goes through torch.compiler.disable.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def not_compiled(fn: F) -> F:
    disabled: Callable[..., Any] | None = None

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal disabled
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return call  # type: ignore[return-value]
