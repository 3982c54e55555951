"""ViGOS."""
