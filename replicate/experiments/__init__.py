"""The paper's experiment grid: the plan `generate` writes, and running it to the end.

`planfile` reads `<runs>/plan.json`; `netfiles` reads what training left in a net's folder
(snapshots, metrics.jsonl) and `netstate` records what the grid did with it (status.json);
`launch` starts one net's training as a subprocess; `runner` runs a whole plan on this machine,
`slurm` submits it to a cluster through submitit, and `status` summarizes a grid in progress.
Training is reached only through its command line and the files it writes, so the grid knows
nothing of the solver's insides.
"""
