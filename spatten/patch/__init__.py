"""Apply SpAtten to Hugging Face models: `with spatten.patch(model, config) as handle: ...`."""

from spatten.patch.compat import UnsupportedModelError
from spatten.patch.handle import PatchHandle, patch

__all__ = ["PatchHandle", "UnsupportedModelError", "patch"]
