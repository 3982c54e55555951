"""Rows and their images: loading, validation, training examples, and the synthetic world."""
