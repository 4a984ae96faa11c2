"""Caffe layer types, one per module, each registered under its prototxt `type`.

Importing this package imports every module in it, so the registry is complete however a layer
was reached; adding a layer type is adding a file.
"""

import pkgutil
from importlib import import_module

for _info in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_info.name}")
