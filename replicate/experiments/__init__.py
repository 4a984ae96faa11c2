"""Experiments: the paper's grid as a plan of nets and the run directories generated for them."""
