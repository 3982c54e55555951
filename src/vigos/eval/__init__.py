"""Evaluation: benchmarks, metrics, judge."""
