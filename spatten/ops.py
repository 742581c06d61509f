"""SpAtten operators: documented wrappers over `torch.ops.spatten.*`, with their fake (meta) kernels.

Each op has a pure-PyTorch twin in `spatten.ops_ref` that the tests compare against.
"""

from __future__ import annotations

import torch

from spatten import _native

_native.load_ops()


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k largest scores, in ascending position order (SpAtten's top-k engine).

    scores: [..., n] floating. Returns int64 [..., k]. Ties at the k-th value go to the lower position.
    Raises if k is outside [0, n], scores hold NaN, or scores are not floating point.
    """
    return torch.ops.spatten.topk_indices(scores, k)


@torch.library.register_fake("spatten::topk_indices")
def _(scores: torch.Tensor, k: int) -> torch.Tensor:
    torch._check(0 <= k <= scores.shape[-1], lambda: f"k must be in [0, {scores.shape[-1]}], got {k}")
    return scores.new_empty((*scores.shape[:-1], k), dtype=torch.int64)
