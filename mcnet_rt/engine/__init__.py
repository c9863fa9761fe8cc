"""Engines: ONNX export of the per-frame step and the backends that run it (`--backend`)."""
from .backends import BACKENDS, ExportedStep, load_backend

__all__ = ["BACKENDS", "ExportedStep", "load_backend"]
