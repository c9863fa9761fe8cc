"""Build of mcnet_rt.

The native module `mcnet_rt._C` (pybind11 kernels with CPU twins) arrives with the kernels issue;
until then this installs the pure-Python package, whose ops run their PyTorch references.
"""
from setuptools import find_packages, setup

setup(
    name="mcnet_rt",
    version="0.1.0",
    description="Real-time MCNet talking-head engine",
    packages=find_packages(include=["mcnet_rt", "mcnet_rt.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "av", "pillow", "safetensors", "PyYAML", "tqdm"],
    entry_points={"console_scripts": ["mcnet-rt=mcnet_rt.cli:main"]},
)
