"""Loading of the compiled modules, with errors that say what went wrong.

`spatten._C` registers the torch ops (links libtorch); `spatten._hwsim` is the simulator (no torch). They load
separately, so a torch ABI mismatch disables the ops, never the simulator.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_BUILD_HINT = "Rebuild with `pip install --no-build-isolation -e .` (or `make build`) against the installed torch."


class NativeModuleError(ImportError):
    """A compiled spatten module is missing or cannot be loaded."""


def _explain(name: str, err: Exception) -> str:
    text = str(err)
    if isinstance(err, ModuleNotFoundError) and err.name == f"spatten.{name}":
        return f"spatten.{name} is not built: the package was installed without its C++ extension. {_BUILD_HINT}"
    if "undefined symbol" in text:
        import torch

        return (
            f"spatten.{name} was built against a different torch than the installed {torch.__version__} "
            f"(ABI mismatch: {text}). {_BUILD_HINT}"
        )
    return f"spatten.{name} failed to load: {text}. {_BUILD_HINT}"


def load(name: str) -> ModuleType:
    """Import `spatten.<name>` or raise NativeModuleError explaining why it cannot be loaded."""
    try:
        return importlib.import_module(f"spatten.{name}")
    except ImportError as err:
        raise NativeModuleError(_explain(name, err)) from err


def load_ops() -> ModuleType:
    """Load the torch op library (registers torch.ops.spatten.*)."""
    import torch  # noqa: F401  (libtorch must be loaded before the op library)

    return load("_C")
