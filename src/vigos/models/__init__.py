"""Models: loading by name, the helpers that run the VL models, tiny models of real architectures."""
