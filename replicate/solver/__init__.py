"""Caffe's solvers: lr policies, update rules, the Step loop, snapshots and logs."""
