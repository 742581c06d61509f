"""Apply SpAtten to Hugging Face models: `with spatten.patch(model, config) as handle: ...`.

`spatten.patch` is both this package and the function: once a submodule is imported, Python binds the package to
the `spatten.patch` attribute, so the package itself is made callable (calling it calls `patch`).
"""

import sys
import types

from spatten.patch.compat import UnsupportedModelError
from spatten.patch.handle import PatchHandle, patch

__all__ = ["PatchHandle", "UnsupportedModelError", "patch"]


class _CallablePackage(types.ModuleType):
    def __call__(self, model, config=None) -> PatchHandle:
        return patch(model, config)


sys.modules[__name__].__class__ = _CallablePackage
