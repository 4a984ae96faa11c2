"""Nets: compiling a Caffe NetParameter into a runnable torch module, and its weights.

Kept apart from `replicate.layers` (single layer types) so that the DAG rules Caffe applies to a
whole net (NetState filtering, blob wiring, loss weights, parameter sharing, weight copy) live in
one place.
"""
