"""A run: its folder, the stages in order, the registry of runs and optional tracking."""
