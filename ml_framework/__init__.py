"""ml_framework: config-driven PyTorch training and Optuna hyperparameter search."""

__version__ = "0.1.0"
