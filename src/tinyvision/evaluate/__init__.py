"""Evaluation: metrics on a split, printed tables and metrics.json."""
