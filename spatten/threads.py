"""torch intra-op thread settings for a block of code (shared by models, training and eval)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with n intra-op threads, then restore. The models here are small: one thread avoids the
    OpenMP spin-waits that made them up to 20x slower on a shared two-core machine. None keeps torch's setting."""
    import torch

    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be at least 1 (or None), got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
