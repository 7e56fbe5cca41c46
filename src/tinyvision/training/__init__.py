"""Training: recipes, budgets, the trainer and its callbacks, losses, optimizers, schedules,
imbalance, the fast head on cached features, the learning-rate finder."""

# Where training writes in a run folder (run/folder.py's RunDir names the same paths); here, in
# the package's light __init__, so the run layout does not import Keras.
CHECKPOINTS_DIR = "checkpoints"
BEST_WEIGHTS_FILE = "best.weights.h5"  # in CHECKPOINTS_DIR: the best epoch of any stage
LOG_FILE = "log.csv"
