"""Settings of the test process, in one place: one torch thread, here and in the programs tests start.

The suite's tensors are small, and PyTorch splits even tiny pooling or elementwise ops across its
OpenMP threads.  On a shared machine (this project's 2 cores serve several jobs at once) each
such op then waits for a thread the scheduler has parked: measured on the 2-core AMD EPYC under a
load of about 14, tests/test_engine_layers.py + test_engine_net.py took 74 s wall and 11.2 s CPU
with the default 2 threads, 23 s and 4.3 s with one.  No test depends on the thread count (the
solver tests already pinned one thread for themselves).  OMP_NUM_THREADS reaches the
subprocesses tests start (CLI runs, DDP ranks); it is set before torch is imported so that this
process's OpenMP pool starts with one thread as well.  The cores are used instead by running
tests in parallel processes (pytest-xdist's `-n auto`, the README's test command), one per CPU.
"""

from __future__ import annotations

import os
import signal

os.environ["OMP_NUM_THREADS"] = "1"

# Tests send Ctrl-C (SIGINT) to this process's threads and to programs they start, which must take
# it as from a terminal.  pytest run as a background job (`... &` in a script) starts with SIGINT
# ignored, which every program it starts would inherit; handled here, it is reset to the default
# in each of them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402
import torch  # noqa: E402  (after OMP_NUM_THREADS on purpose)

torch.set_num_threads(1)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook; absent where xdist is not installed
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per CPU this process may use (as the data pools count them: affinity
    and SLURM's allocation), at most 8.  Each worker holds its own torch (about 0.4 GB) and starts
    programs of its own; past 8 the suite's longest tests (the demo and the SLURM requeues, 20-45 s
    each) bound its time anyway."""
    from replicate.data.cpus import available_cpus

    return min(available_cpus(), 8)


# The GPU tier (tests marked `gpu`, run with `python -m pytest -m gpu`): see tests/gpu_tier.py.
from gpu_tier import device, tier_device  # noqa: E402,F401  (fixtures, shared by the tier's modules)
