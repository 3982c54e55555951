"""The demo: the paper's experiment in miniature, offline, with its report."""
