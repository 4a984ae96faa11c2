"""Shared pieces of the solver tests: a run folder copied from Caffe's e2e fixture, its params,
and single-threaded torch (the fixture's nets are tiny; on a shared 2-core machine the default
thread pool makes them 10-20x slower through oversubscription)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from replay_support import E2E, copy_run, params  # noqa: F401 (shared with the benchmarks)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
