"""Optuna studies over dotted-key search spaces."""
