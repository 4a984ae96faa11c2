"""Caffe's axis conventions shared by layers: negative axes count from the end (CanonicalAxisIndex)."""

from __future__ import annotations

from replicate.layers.base import Layer


def canonical_axis(layer: Layer, axis: int, num_axes: int) -> int:
    """`axis` in [0, num_axes), negatives from the end; out of range names the layer."""
    if not -num_axes <= axis < num_axes:
        raise layer.error(f"axis {axis} out of range for a blob with {num_axes} axes")
    return axis + num_axes if axis < 0 else axis
