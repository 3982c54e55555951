"""Answer extraction and correctness."""
