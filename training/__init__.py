"""Training around the models: typed config, the loop, MLflow tracking and sweeps."""
