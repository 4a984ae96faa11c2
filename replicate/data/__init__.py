"""Data: the paper's datasets on disk (lists, splits, LMDB, means) and a generated stand-in."""
