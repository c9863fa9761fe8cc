"""Seeing inside the model: `panels` draws its per-frame outputs (the one renderer of `visualize`, TensorBoard and
the validation grid), `memory` the meta-memory figures, `runner` the `mcnet-rt visualize` command's work."""
