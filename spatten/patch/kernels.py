"""The ops the patch calls: the compiled `spatten.ops` when the op is registered, else `spatten.ops_ref`.

The indirection lets the patch run while an op is still being written in C++; `backend(name)` tells which one
is in use (the tests assert the compiled path once it exists).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

OP_NAMES = ("topk_indices", "token_importance", "head_importance", "local_value_attention", "quantize_msb_lsb",
            "dequantize_msb_lsb", "progressive_attention", "attention_with_importance", "quantized_attention",
            "fake_quantize")


@functools.cache
def _compiled_ops():
    try:
        from spatten import ops
    except ImportError:
        return None
    return ops


@functools.cache
def backend(name: str) -> str:
    """"compiled" when torch.ops.spatten.<name> is registered and wrapped in spatten.ops, else "reference"."""
    if name not in OP_NAMES:
        raise ValueError(f"unknown spatten op {name!r}; known: {OP_NAMES}")
    ops = _compiled_ops()
    if ops is not None and hasattr(ops, name) and hasattr(torch.ops.spatten, name):
        return "compiled"
    return "reference"


def op(name: str) -> Callable:
    """The implementation of spatten op `name` (compiled if available)."""
    if backend(name) == "compiled":
        return getattr(_compiled_ops(), name)
    from spatten import ops_ref

    return getattr(ops_ref, name, None) or _COMPOSED_REFERENCES[name]


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    return op("topk_indices")(scores, k)


def token_importance(probs, query_mask=None, key_mask=None, accumulator=None) -> torch.Tensor:
    return op("token_importance")(probs, query_mask, key_mask, accumulator)


def head_importance(attn_out, query_mask=None, accumulator=None) -> torch.Tensor:
    return op("head_importance")(attn_out, query_mask, accumulator)


def local_value_attention(probs, v, k):
    return op("local_value_attention")(probs, v, k)


def quantize_msb_lsb(x, msb_bits, lsb_bits, per):
    return op("quantize_msb_lsb")(x, msb_bits, lsb_bits, per)


def dequantize_msb_lsb(msb, lsb, scale, lsb_bits):
    return op("dequantize_msb_lsb")(msb, lsb, scale, lsb_bits)


def progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, threshold, lsb_bits, scaling):
    return op("progressive_attention")(q, k_msb, k_lsb, k_scale, v, mask, threshold, lsb_bits, scaling)


def attention_with_importance(q, k, v, mask, scaling, query_mask=None):
    return op("attention_with_importance")(q, k, v, mask, scaling, query_mask)


def quantized_attention(q, k, v, mask, threshold, msb_bits, lsb_bits, per, scaling):
    """progressive_attention on k quantized inside the op (differentiable in k: straight-through)."""
    return op("quantized_attention")(q, k, v, mask, threshold, msb_bits, lsb_bits, per, scaling)


def fake_quantize(x, bits, per):
    """x [..., L, D] quantized to `bits` bits and back (straight-through gradient)."""
    return op("fake_quantize")(x, bits, per)


# Ops the compiled library offers as one differentiable op; without it, the same forward composed of references.
def _quantized_attention_reference(q, k, v, mask, threshold, msb_bits, lsb_bits, per, scaling):
    from spatten import ops_ref

    k_msb, k_lsb, k_scale = ops_ref.quantize_msb_lsb(k, msb_bits, lsb_bits, per)
    return ops_ref.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, threshold, lsb_bits, scaling)


def _fake_quantize_reference(x, bits, per):
    from spatten import ops_ref

    msb, lsb, scale = ops_ref.quantize_msb_lsb(x, bits, 0, per)
    return ops_ref.dequantize_msb_lsb(msb, lsb, scale, 0)


_COMPOSED_REFERENCES = {"quantized_attention": _quantized_attention_reference, "fake_quantize": _fake_quantize_reference}
