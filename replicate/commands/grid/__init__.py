"""Run the paper's experiment grid: locally, on SLURM, and watch its status."""
