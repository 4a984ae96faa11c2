"""The project's checkout: the files that live beside the package, where users read and edit them.

The prototxt templates, the solver configs, the paper's reference results and the benchmark's
CaffeNet are top-level folders of the repository, not package data: replicate runs from its
checkout (`pip install -e .`, as the README installs it).  A copy installed without one (`pip
install .`, or a wheel) has the code and none of those files; `in_checkout` then says so in one
line, where an empty list of known architectures or a missing-file error would leave the user to
guess.
"""

from __future__ import annotations

from pathlib import Path

from replicate.errors import ReplicateError

#: The checkout's top level (the package's parent folder).
PROJECT_DIR = Path(__file__).resolve().parent.parent


def in_checkout(path: Path) -> Path:
    """`path`, a file or folder of the checkout; a one-line error if this copy of replicate was
    installed without its checkout.  A path missing from a real checkout is left to the caller's
    own error (an unknown name, a deleted file)."""
    if not path.exists() and not (PROJECT_DIR / "pyproject.toml").is_file():
        raise ReplicateError(
            f"{path} not found: replicate reads its templates, solver configs and the paper's results "
            f"from its checkout, and the copy in {PROJECT_DIR / 'replicate'} was installed without one; "
            "install it from a clone with `pip install -e <clone>`")
    return path
