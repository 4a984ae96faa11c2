"""Compiling Caffe nets: NetState rules, the blob DAG, fillers and weight copy."""
