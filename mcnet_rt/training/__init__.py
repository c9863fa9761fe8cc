"""Training MCNet with the released recipe (see training/README.md): configuration, data, losses, the loop."""
