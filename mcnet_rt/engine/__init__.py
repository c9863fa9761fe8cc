"""Engines: ONNX export of the per-frame step and the backends that run it (`load_backend`)."""
from .backends import BACKENDS, add_backend_argument, load_backend
from .exported import ExportedStep

__all__ = ["BACKENDS", "ExportedStep", "add_backend_argument", "load_backend"]
