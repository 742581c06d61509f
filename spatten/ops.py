"""SpAtten operators: documented wrappers over `torch.ops.spatten.*`, with their fake (meta) kernels.

Each op has a pure-PyTorch twin with the same signature in `spatten.ops_ref` that the tests compare against.
Float inputs may be float32, float16 or bfloat16; the kernels compute in float32 and return float32. Bad input
raises ValueError (shapes, ranges, NaN) or TypeError (dtypes) naming the op and the argument.
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


def token_importance(
    probs: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
    accumulator: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cascade token importance: accumulator + attention probability each key receives.

    probs: [B, H, Lq, Lk]; query_mask: bool [B, Lq] and key_mask: bool [B, Lk] (True = real token);
    accumulator: float32 [B, Lk] or None (zeros). Returns a new float32 [B, Lk]:
    `accumulator[b, j] + sum_{h, valid i} probs[b, h, i, j]`, with no contribution to a masked key.
    """
    return torch.ops.spatten.token_importance(probs, query_mask, key_mask, accumulator)


def head_importance(
    attn_out: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    accumulator: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cascade head importance: accumulator + magnitude of each head's attention output.

    attn_out: [B, H, Lq, D]; query_mask: bool [B, Lq]; accumulator: float32 [B, H] or None.
    Returns a new float32 [B, H]: `accumulator[b, h] + sum_{valid i, d} |attn_out[b, h, i, d]|`.
    """
    return torch.ops.spatten.head_importance(attn_out, query_mask, accumulator)


def local_value_attention(
    probs: torch.Tensor, v: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local value pruning: each query row uses only the V rows of its k largest probabilities.

    probs: [B, H, Lq, Lk]; v: [B, H, Lk, D]; k in [0, Lk]. Returns
    out float32 [B, H, Lq, D] = sum over kept j of probs[.., j] * v[.., j, :] (no renormalisation),
    kept int64 [B, H, Lq, k] (topk_indices order and ties), values_fetched int64 [B, H] (distinct V rows used).
    """
    return torch.ops.spatten.local_value_attention(probs, v, k)


def quantize_msb_lsb(
    x: torch.Tensor, msb_bits: int, lsb_bits: int, per: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric linear quantization to msb_bits + lsb_bits bits, split into MSB and LSB parts.

    x: [..., L, D]; per: "head" (one scale per [L, D] slice) or "token" (one per row). Returns msb int16 and
    lsb int16 [..., L, D] (lsb in [0, 2^lsb_bits)) and scale float32 [..., 1, 1] or [..., L, 1], with
    q = clamp(round_half_even(x / scale), -qmax, qmax) = msb * 2^lsb_bits + lsb, qmax = 2^(b-1) - 1.
    Needs msb_bits >= 1, lsb_bits >= 0, 2 <= msb_bits + lsb_bits <= 16 and finite x.
    """
    return torch.ops.spatten.quantize_msb_lsb(x, msb_bits, lsb_bits, per)


def dequantize_msb_lsb(
    msb: torch.Tensor, lsb: torch.Tensor | None, scale: torch.Tensor, lsb_bits: int
) -> torch.Tensor:
    """Inverse of quantize_msb_lsb; with lsb=None the missing LSBs are taken at their midpoint.

    msb, lsb: int16 [..., L, D]; scale: float32 [..., 1, 1] or [..., L, 1]. Returns float32 [..., L, D]:
    `(msb * 2^l + lsb) * scale`, or `(msb * 2^l + 2^(l-1)) * scale` without lsb (no offset when l = 0).
    """
    return torch.ops.spatten.dequantize_msb_lsb(msb, lsb, scale, lsb_bits)


def progressive_attention(
    q: torch.Tensor,
    k_msb: torch.Tensor,
    k_lsb: torch.Tensor,
    k_scale: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    threshold: float,
    lsb_bits: int,
    scaling: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention with progressive quantization: MSB-only keys first, LSB refetch for low-confidence rows.

    q: [B, H, Lq, D]; k_msb, k_lsb, k_scale: quantize_msb_lsb of K [B, H, Lk, D]; v: [B, H, Lk, Dv];
    mask: bool broadcastable to [B, H, Lq, Lk] (True = may attend) or None. Probabilities are
    softmax(scaling * q @ K_msb^T) over allowed keys; rows whose max probability < threshold are recomputed from
    MSB+LSB keys. Returns out float32 [B, H, Lq, Dv] = probs @ v, probs float32 [B, H, Lq, Lk] and
    refetch bool [B, H, Lq]. A row with no allowed key gives zeros and no refetch.
    """
    return torch.ops.spatten.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, threshold, lsb_bits, scaling)


def attention_with_importance(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    query_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention fused with cascade token importance; the [B, H, Lq, Lk] probabilities are never materialised.

    q: [B, H, Lq, D]; k: [B, H, Lk, D]; v: [B, H, Lk, Dv]; mask: bool broadcastable to [B, H, Lq, Lk]
    (True = may attend) or None; query_mask: bool [B, Lq] (True = real query row) or None.
    With probs = softmax(scaling * q @ k^T) over allowed keys (a row with no allowed key: all zeros), returns
    out float32 [B, H, Lq, Dv] = probs @ v and importance float32 [B, Lk] =
    `token_importance(probs, query_mask)`, i.e. the sum over heads and valid query rows of probs.
    """
    return torch.ops.spatten.attention_with_importance(q, k, v, mask, scaling, query_mask)


# Fake kernels: output shapes and dtypes for torch.compile / meta tensors. They check what shapes alone decide.


def _check_range(name: str, value: int, low: int, high: int, op: str) -> None:
    torch._check_value(low <= value <= high, lambda: f"spatten.{op}: {name} must be in [{low}, {high}], got {value}")


@torch.library.register_fake("spatten::topk_indices")
def _(scores: torch.Tensor, k: int) -> torch.Tensor:
    _check_range("k", k, 0, scores.shape[-1], "topk_indices")
    return scores.new_empty((*scores.shape[:-1], k), dtype=torch.int64)


@torch.library.register_fake("spatten::token_importance")
def _(probs, query_mask=None, key_mask=None, accumulator=None):
    torch._check_value(probs.dim() == 4, lambda: "spatten.token_importance: probs must be [B, H, Lq, Lk]")
    return probs.new_empty((probs.shape[0], probs.shape[3]), dtype=torch.float32)


@torch.library.register_fake("spatten::head_importance")
def _(attn_out, query_mask=None, accumulator=None):
    torch._check_value(attn_out.dim() == 4, lambda: "spatten.head_importance: attn_out must be [B, H, Lq, D]")
    return attn_out.new_empty((attn_out.shape[0], attn_out.shape[1]), dtype=torch.float32)


@torch.library.register_fake("spatten::local_value_attention")
def _(probs, v, k):
    b, h, lq, lk = probs.shape
    _check_range("k", k, 0, lk, "local_value_attention")
    return (
        probs.new_empty((b, h, lq, v.shape[-1]), dtype=torch.float32),
        probs.new_empty((b, h, lq, k), dtype=torch.int64),
        probs.new_empty((b, h), dtype=torch.int64),
    )


@torch.library.register_fake("spatten::quantize_msb_lsb")
def _(x, msb_bits, lsb_bits, per):
    scale_shape = (*x.shape[:-2], 1 if per == "head" else x.shape[-2], 1)
    return (
        x.new_empty(x.shape, dtype=torch.int16),
        x.new_empty(x.shape, dtype=torch.int16),
        x.new_empty(scale_shape, dtype=torch.float32),
    )


@torch.library.register_fake("spatten::dequantize_msb_lsb")
def _(msb, lsb, scale, lsb_bits):
    return msb.new_empty(msb.shape, dtype=torch.float32)


@torch.library.register_fake("spatten::progressive_attention")
def _(q, k_msb, k_lsb, k_scale, v, mask, threshold, lsb_bits, scaling):
    b, h, lq, _ = q.shape
    lk, dv = v.shape[2], v.shape[3]
    return (
        q.new_empty((b, h, lq, dv), dtype=torch.float32),
        q.new_empty((b, h, lq, lk), dtype=torch.float32),
        q.new_empty((b, h, lq), dtype=torch.bool),
    )


@torch.library.register_fake("spatten::attention_with_importance")
def _(q, k, v, mask, scaling, query_mask=None):
    torch._check_value(q.dim() == 4 and k.dim() == 4 and v.dim() == 4,
                       lambda: "spatten.attention_with_importance: q, k, v must be [B, H, L, D]")
    b, h, lq, _ = q.shape
    return (
        q.new_empty((b, h, lq, v.shape[3]), dtype=torch.float32),
        q.new_empty((b, k.shape[2]), dtype=torch.float32),
    )
