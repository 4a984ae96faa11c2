"""Results: Caffe training logs in, the paper's statistics, figures, Table 1 and a report out.

This package reads text (logs, metrics.jsonl, manifests, the paper's csv) and never imports the
engine: a report can be built on a laptop from logs copied off a cluster, or from the authors'
own 2014 logs.
"""
