"""Shortcut diagnostics: grounding, answer leakage, teacher image reliance, image sensitivity."""
