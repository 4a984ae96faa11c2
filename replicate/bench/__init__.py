"""Speed measurements: training step, data loaders, and both together (`python -m replicate bench`)."""
