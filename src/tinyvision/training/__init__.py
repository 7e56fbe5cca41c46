"""Training: recipes, budgets, the trainer and its callbacks, losses, optimizers, schedules,
imbalance, the fast head on cached features, the learning-rate finder."""
