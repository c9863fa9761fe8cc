"""Shared test helpers: media and fixtures, servers and browsers, Ray, training configs, ONNX reference ops."""
