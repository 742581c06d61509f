"""Plain PyTorch references for every spatten op: slow, obvious, and the ground truth in tests."""

from __future__ import annotations

import torch


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Reference for spatten.ops.topk_indices: stable sort by descending score, take k, sort positions."""
    order = torch.sort(scores.float(), dim=-1, descending=True, stable=True).indices
    return torch.sort(order[..., :k], dim=-1).values
