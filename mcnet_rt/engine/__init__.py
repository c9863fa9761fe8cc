"""Engines: ONNX export of the per-frame step and the backends that run it (`load_backend`)."""
from .backends import BACKENDS, load_backend
from .exported import ExportedStep

__all__ = ["BACKENDS", "ExportedStep", "load_backend"]
