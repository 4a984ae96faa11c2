"""Caffe layer types, one per module, each registered under its prototxt `type`.

Importing this package imports every layer module so that the registry is complete; the list is
explicit (no star imports) and `tests/test_registry.py` checks that every module here is in it.
"""

from importlib import import_module

LAYER_MODULES: tuple[str, ...] = ()

for _name in LAYER_MODULES:
    import_module(f"{__name__}.{_name}")
