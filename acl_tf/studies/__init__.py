"""Multi-run experiments built from the tasks: the reproduction study of the paper's tables."""
