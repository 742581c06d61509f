"""spatten: SpAtten (HPCA 2021) cascade token/head pruning, local value pruning and progressive quantization
for Hugging Face models, with traces that replay on a cycle-level model of the SpAtten accelerator.

Submodules load lazily so that `import spatten` stays light and never initialises CUDA.
"""

from __future__ import annotations

import importlib

# The one place the version is written: pyproject.toml (scikit-build-core's regex provider) and CMake (spatten-sim
# --version, spatten/_build_info.py) read this line.
__version__ = "0.1.0"

_LAZY_ATTRS = {
    "ops": ("spatten.ops", None),
    "ops_ref": ("spatten.ops_ref", None),
    "Trace": ("spatten.trace", "Trace"),
    "SpAttenConfig": ("spatten.config", "SpAttenConfig"),
    "patch": ("spatten.patch", "patch"),
    "hwsim": ("spatten.hwsim", None),
    "models": ("spatten.models", None),
    "eval": ("spatten.eval", None),
}
__all__ = sorted(_LAZY_ATTRS)


def __getattr__(name: str):
    if name in _LAZY_ATTRS:
        module_name, attr = _LAZY_ATTRS[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'spatten' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY_ATTRS))
