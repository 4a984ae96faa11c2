"""Dataset tools: the paper's splits, LMDB conversion, mean files, a generated dataset."""
