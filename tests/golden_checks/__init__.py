"""Checks of golden cases, one module per family: each defines `handles(case_name) -> bool` and
`check(case_dir) -> None`; `tests/test_golden.py` dispatches every case to exactly one."""
