"""Experiment tracking (MLflow, Weights & Biases) as trainer callbacks and start/finish hooks: the
trainer knows nothing of trackers. Backends are imported only when configured."""
