"""Checkers of golden Caffe cases: each module offers `handles(case_name)` and `check(case_dir)`."""
