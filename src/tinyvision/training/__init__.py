"""Training: recipes, budgets, the trainer and its callbacks, losses, optimizers, schedules,
imbalance, the fast head on cached features, the learning-rate finder."""

# Where training writes in a run folder (tinyvision/layout.py names the whole run folder)
from tinyvision.layout import BEST_WEIGHTS_FILE, CHECKPOINTS_DIR, LOG_FILE

__all__ = ["BEST_WEIGHTS_FILE", "CHECKPOINTS_DIR", "LOG_FILE"]
