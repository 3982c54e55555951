"""Training: the config, the trainer, the recipe, atomic checkpoints."""
