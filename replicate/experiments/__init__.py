"""Experiments: the paper's grid as a plan of nets, their run directories, and running it.

`plan` and `rundirs` write `<runs>/plan.json` and a folder per net (see `generate`).  The rest
runs that plan: `planfile` reads it back; `netfiles` reads what training left in a net's folder
(snapshots, metrics.jsonl) and `netstate` records what the grid did with it (status.json);
`launch` starts one net's training as a subprocess; `runner` runs a whole plan on this machine,
`slurm` submits it to a cluster through submitit, and `status` summarizes a grid in progress.
Training is reached only through its command line and the files it writes, so the grid knows
nothing of the solver's insides.
"""
