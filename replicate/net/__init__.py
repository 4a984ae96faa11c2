"""Nets: compiling a Caffe NetParameter into a runnable torch module, and its parameters.

Kept apart from `replicate.layers` (single layer types) so that the DAG rules Caffe applies to a
whole net (NetState filtering, blob wiring, loss weights, parameter sharing) live in one place.
"""
