"""Experiment tracking on MLflow: the store (``store``: URIs, experiments, loggers, config hashes and tags), the
model registry (``registry``) and sweeps (``sweeps``: ids, skipping finished configurations)."""
