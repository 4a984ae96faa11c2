"""One module per CLI subcommand (see replicate.cli)."""
