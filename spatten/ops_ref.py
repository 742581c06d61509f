"""Plain PyTorch references for every spatten op: slow, obvious, and the ground truth in tests.

Signatures, shapes and errors match `spatten.ops` (see docs/ops.md), so a caller can fall back to these when the
compiled ops are unavailable. Everything is computed in float32, or in float64 when a float input is float64
(`compute_dtype`), like the kernels; importance statistics are float32 always.
"""

from __future__ import annotations

import torch

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any given tensor is float64, else float32: the dtype the ops compute and return in."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def masked_softmax(op: str, logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax of logits [..., Lk] over the allowed keys (mask True = may attend); a row with no allowed key is all
    zeros. A NaN or infinite logit on an allowed key raises ValueError, as the kernels do (docs/ops.md)."""
    allowed_finite = torch.isfinite(logits) if mask is None else torch.isfinite(logits) | ~mask
    if not bool(allowed_finite.all()):
        raise ValueError(f"spatten.{op}: non-finite attention logits (q or k holds NaN or Inf on an allowed key, "
                         "or scaling * q.k overflows)")
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if mask is not None:
        probs = torch.where(mask.any(dim=-1, keepdim=True), probs, 0.0)  # rows with no allowed key: NaN -> 0
    return probs


def _require_float(name: str, op: str, t: torch.Tensor) -> None:
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"spatten.{op}: {name} must be a floating dtype, got {t.dtype}")


def _require_bool_mask(name: str, op: str, mask: torch.Tensor, shape: tuple[int, ...]) -> None:
    if mask.dtype != torch.bool:
        raise TypeError(f"spatten.{op}: {name} must be bool (True = real token), got {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"spatten.{op}: {name} must have shape {list(shape)}, got {list(mask.shape)}")


def _require_accumulator(op: str, acc: torch.Tensor, shape: tuple[int, ...]) -> None:
    if acc.dtype != torch.float32:
        raise TypeError(f"spatten.{op}: accumulator must be float32, got {acc.dtype}")
    if tuple(acc.shape) != shape:
        raise ValueError(f"spatten.{op}: accumulator must have shape {list(shape)}, got {list(acc.shape)}")


def _require_float_4d(name: str, op: str, t: torch.Tensor, layout: str) -> None:
    _require_float(name, op, t)
    if t.dim() != 4:
        raise ValueError(f"spatten.{op}: {name} must be {layout}, got shape {list(t.shape)}")


def _expand_attention_mask(op: str, mask: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    """mask (bool, True = may attend) expanded to shape [B, H, Lq, Lk], or None."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise TypeError(f"spatten.{op}: mask must be bool (True = may attend), got {mask.dtype}")
    try:
        return mask.expand(*shape)
    except RuntimeError:
        raise ValueError(f"spatten.{op}: mask shape {list(mask.shape)} does not broadcast to "
                         f"[B, H, Lq, Lk] = {list(shape)}") from None


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Reference for spatten.ops.topk_indices: stable sort by descending score, take k, sort positions."""
    _require_float("scores", "topk_indices", scores)
    if scores.dim() < 1:
        raise ValueError("spatten.topk_indices: scores must have at least 1 dimension, got a scalar")
    n = scores.shape[-1]
    if not 0 <= k <= n:
        raise ValueError(f"spatten.topk_indices: k must be in [0, {n}] (the last dim), got {k}")
    if torch.isnan(scores).any():
        raise ValueError("spatten.topk_indices: scores contain NaN")
    order = torch.sort(scores.float(), dim=-1, descending=True, stable=True).indices
    return torch.sort(order[..., :k], dim=-1).values


def token_importance(
    probs: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
    accumulator: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference for spatten.ops.token_importance.

    probs: [B, H, Lq, Lk]; query_mask: bool [B, Lq]; key_mask: bool [B, Lk]; accumulator: float32 [B, Lk].
    Returns float32 [B, Lk] = accumulator + sum over heads and valid query rows of probs.
    """
    op = "token_importance"
    _require_float_4d("probs", op, probs, "[B, H, Lq, Lk]")
    b, _, lq, lk = probs.shape
    p = probs.float()
    if query_mask is not None:
        _require_bool_mask("query_mask", op, query_mask, (b, lq))
        # where, not multiply: masked rows may hold inf/NaN padding and must contribute nothing.
        p = torch.where(query_mask[:, None, :, None], p, 0.0)
    scores = p.sum(dim=(1, 2))
    if key_mask is not None:
        _require_bool_mask("key_mask", op, key_mask, (b, lk))
        scores = torch.where(key_mask, scores, 0.0)
    if accumulator is not None:
        _require_accumulator(op, accumulator, (b, lk))
        scores = accumulator + scores
    return scores


def head_importance(
    attn_out: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    accumulator: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference for spatten.ops.head_importance.

    attn_out: [B, H, Lq, D]; query_mask: bool [B, Lq]; accumulator: float32 [B, H].
    Returns float32 [B, H] = accumulator + sum over valid rows and d of |attn_out|.
    """
    op = "head_importance"
    _require_float_4d("attn_out", op, attn_out, "[B, H, Lq, D]")
    b, h, lq, _ = attn_out.shape
    a = attn_out.float().abs()
    if query_mask is not None:
        _require_bool_mask("query_mask", op, query_mask, (b, lq))
        a = torch.where(query_mask[:, None, :, None], a, 0.0)
    scores = a.sum(dim=(2, 3))
    if accumulator is not None:
        _require_accumulator(op, accumulator, (b, h))
        scores = accumulator + scores
    return scores


def local_value_attention(
    probs: torch.Tensor, v: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference for spatten.ops.local_value_attention.

    probs: [B, H, Lq, Lk]; v: [B, H, Lk, D]; k in [0, Lk].
    Returns out float32 [B, H, Lq, D], kept int64 [B, H, Lq, k], values_fetched int64 [B, H].
    """
    op = "local_value_attention"
    _require_float_4d("probs", op, probs, "[B, H, Lq, Lk]")
    _require_float_4d("v", op, v, "[B, H, Lk, D]")
    b, h, lq, lk = probs.shape
    if tuple(v.shape[:3]) != (b, h, lk):
        raise ValueError(f"spatten.{op}: v must have shape [B, H, Lk, D] = [{b}, {h}, {lk}, D], got {list(v.shape)}")
    if not 0 <= k <= lk:
        raise ValueError(f"spatten.{op}: k must be in [0, {lk}] (Lk), got {k}")
    if torch.isnan(probs).any():
        raise ValueError(f"spatten.{op}: probs contain NaN")
    kept = topk_indices(probs, k)  # selected on float32-rounded probabilities, like the kernel
    dtype = compute_dtype(probs, v)
    p = probs.to(dtype)
    vf = v.to(dtype)
    kept_probs = torch.gather(p, -1, kept)  # [B, H, Lq, k]
    kept_v = torch.gather(vf.unsqueeze(2).expand(b, h, lq, lk, vf.shape[-1]), 3,
                          kept[..., None].expand(b, h, lq, k, vf.shape[-1]))  # [B, H, Lq, k, D]
    out = (kept_probs[..., None] * kept_v).sum(dim=3)
    used = torch.zeros(b, h, lk, dtype=torch.bool)
    used.scatter_(2, kept.reshape(b, h, lq * k), True)
    return out, kept, used.sum(dim=-1)


def _check_bits(op: str, msb_bits: int, lsb_bits: int) -> None:
    if msb_bits < 1 or lsb_bits < 0 or msb_bits + lsb_bits < 2 or msb_bits + lsb_bits > 16:
        raise ValueError(
            f"spatten.{op}: bits out of range: need msb_bits >= 1, lsb_bits >= 0 and "
            f"2 <= msb_bits + lsb_bits <= 16, got msb_bits={msb_bits}, lsb_bits={lsb_bits}"
        )


def quantize_msb_lsb(
    x: torch.Tensor, msb_bits: int, lsb_bits: int, per: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference for spatten.ops.quantize_msb_lsb.

    x: [..., L, D]. Returns msb int16 [..., L, D], lsb int16 [..., L, D] (in [0, 2^lsb_bits)), and scale
    float32 [..., 1, 1] (per="head") or [..., L, 1] (per="token").
    """
    op = "quantize_msb_lsb"
    _require_float("x", op, x)
    if x.dim() < 2:
        raise ValueError(f"spatten.{op}: x must be [..., L, D] (at least 2 dims), got shape {list(x.shape)}")
    _check_bits(op, msb_bits, lsb_bits)
    if per not in ("head", "token"):
        raise ValueError(f"spatten.{op}: per must be 'head' or 'token', got {per!r}")
    xf = x.to(compute_dtype(x))
    if not torch.isfinite(xf).all():
        raise ValueError(f"spatten.{op}: x contains NaN or Inf")
    qmax = 2 ** (msb_bits + lsb_bits - 1) - 1
    dims = (-2, -1) if per == "head" else (-1,)
    if xf.numel() == 0:
        group_max = torch.zeros(x.shape[:-2] + ((1,) if per == "head" else (x.shape[-2],)) + (1,), dtype=xf.dtype)
    else:
        group_max = xf.abs().amax(dim=dims, keepdim=True)
    info = torch.finfo(xf.dtype)
    tiniest = info.smallest_normal * info.eps  # the smallest subnormal: x / scale stays finite
    scale = torch.where(group_max > 0, torch.clamp_min(group_max / qmax, tiniest), 1.0)
    q = torch.clamp(torch.round(xf / scale), -qmax, qmax).to(torch.int32)
    msb = torch.div(q, 2**lsb_bits, rounding_mode="floor")
    lsb = q - msb * 2**lsb_bits
    return msb.to(torch.int16), lsb.to(torch.int16), scale


def _check_scale_layout(op: str, name: str, scale: torch.Tensor, values: torch.Tensor) -> None:
    """scale must be float32/float64 [..., 1, 1] or [..., L, 1] with leading dims broadcasting to values [..., L, D]."""
    if scale.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"spatten.{op}: {name} must be float32 or float64, got {scale.dtype}")
    layout_ok = (
        scale.dim() == values.dim()
        and scale.shape[-1] == 1
        and scale.shape[-2] in (1, values.shape[-2])
        and all(s in (1, m) for s, m in zip(scale.shape[:-2], values.shape[:-2]))
    )
    if not layout_ok:
        raise ValueError(
            f"spatten.{op}: {name} must be [..., 1, 1] (per head) or [..., L, 1] (per token) for values of shape "
            f"{list(values.shape)}, got {list(scale.shape)}"
        )


def dequantize_msb_lsb(
    msb: torch.Tensor, lsb: torch.Tensor | None, scale: torch.Tensor, lsb_bits: int
) -> torch.Tensor:
    """Reference for spatten.ops.dequantize_msb_lsb.

    msb, lsb: int16 [..., L, D]; scale: float32 broadcastable ([..., 1, 1] or [..., L, 1]). Without lsb the
    missing LSBs are taken at their midpoint 2^(lsb_bits-1). Returns [..., L, D] in the scale's dtype.
    """
    op = "dequantize_msb_lsb"
    if msb.dtype != torch.int16:
        raise TypeError(f"spatten.{op}: msb must be int16, got {msb.dtype}")
    if lsb is not None:
        if lsb.dtype != torch.int16:
            raise TypeError(f"spatten.{op}: lsb must be int16, got {lsb.dtype}")
        if lsb.shape != msb.shape:
            raise ValueError(f"spatten.{op}: lsb shape {list(lsb.shape)} differs from msb shape {list(msb.shape)}")
    if not 0 <= lsb_bits <= 15:
        raise ValueError(f"spatten.{op}: lsb_bits must be in [0, 15], got {lsb_bits}")
    if msb.dim() < 2:
        raise ValueError(f"spatten.{op}: msb must be [..., L, D] (at least 2 dims), got shape {list(msb.shape)}")
    _check_scale_layout(op, "scale", scale, msb)
    low = lsb.to(torch.int32) if lsb is not None else (2 ** (lsb_bits - 1) if lsb_bits > 0 else 0)
    q = msb.to(torch.int32) * 2**lsb_bits + low
    return q.to(scale.dtype) * scale


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
    """Reference for spatten.ops.progressive_attention.

    q: [B, H, Lq, D]; k_msb, k_lsb: int16 [B, H, Lk, D]; k_scale: float32 [B, H, 1, 1] or [B, H, Lk, 1];
    v: [B, H, Lk, Dv]; mask: bool broadcastable to [B, H, Lq, Lk] (True = may attend) or None.
    Returns out float32 [B, H, Lq, Dv], probs float32 [B, H, Lq, Lk], refetch bool [B, H, Lq].
    """
    op = "progressive_attention"
    _require_float_4d("q", op, q, "[B, H, Lq, D]")
    _require_float_4d("v", op, v, "[B, H, Lk, Dv]")
    b, h, lq, d = q.shape
    lk = v.shape[2]
    for name, part in (("k_msb", k_msb), ("k_lsb", k_lsb)):
        if part.dtype != torch.int16:
            raise TypeError(f"spatten.{op}: {name} must be int16, got {part.dtype}")
        if tuple(part.shape) != (b, h, lk, d):
            raise ValueError(f"spatten.{op}: {name} must have shape [B, H, Lk, D] = {[b, h, lk, d]}, "
                             f"got {list(part.shape)}")
    _check_scale_layout(op, "k_scale", k_scale, k_msb)
    if tuple(v.shape[:2]) != (b, h):
        raise ValueError(f"spatten.{op}: v must have shape [B, H, Lk, Dv] with B, H = {b}, {h}, got {list(v.shape)}")
    mask = _expand_attention_mask(op, mask, (b, h, lq, lk))
    if threshold != threshold:
        raise ValueError(f"spatten.{op}: threshold is NaN")
    if not abs(scaling) < float("inf"):
        raise ValueError(f"spatten.{op}: scaling must be finite, got {scaling}")
    dtype = compute_dtype(q, v, k_scale)
    k_coarse = dequantize_msb_lsb(k_msb, None, k_scale.to(dtype), lsb_bits)
    k_full = dequantize_msb_lsb(k_msb, k_lsb, k_scale.to(dtype), lsb_bits)
    qf = q.to(dtype)

    def softmax_probs(keys: torch.Tensor) -> torch.Tensor:
        return masked_softmax(op, scaling * (qf @ keys.transpose(-1, -2)), mask)

    coarse = softmax_probs(k_coarse)
    has_key = mask.any(dim=-1) if mask is not None else torch.full((b, h, lq), lk > 0)
    if lk > 0:
        refetch = has_key & (coarse.amax(dim=-1) < threshold)
    else:
        refetch = has_key
    probs = torch.where(refetch[..., None], softmax_probs(k_full), coarse)
    return probs @ v.to(dtype), probs, refetch


def attention_with_importance(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    query_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for spatten.ops.attention_with_importance.

    q: [B, H, Lq, D]; k: [B, H, Lk, D]; v: [B, H, Lk, Dv]; mask: bool broadcastable to [B, H, Lq, Lk] or None;
    query_mask: bool [B, Lq] or None. Returns out float32 [B, H, Lq, Dv] and importance float32 [B, Lk].
    """
    op = "attention_with_importance"
    _require_float_4d("q", op, q, "[B, H, Lq, D]")
    _require_float_4d("k", op, k, "[B, H, Lk, D]")
    _require_float_4d("v", op, v, "[B, H, Lk, Dv]")
    b, h, lq, d = q.shape
    lk = k.shape[2]
    if (k.shape[0], k.shape[1], k.shape[3]) != (b, h, d):
        raise ValueError(f"spatten.{op}: k must have shape [B, H, Lk, D] with B, H, D = {b}, {h}, {d} from q, "
                         f"got {list(k.shape)}")
    if tuple(v.shape[:3]) != (b, h, lk):
        raise ValueError(f"spatten.{op}: v must have shape [B, H, Lk, Dv] with B, H, Lk = {b}, {h}, {lk} from q "
                         f"and k, got {list(v.shape)}")
    if not abs(scaling) < float("inf"):
        raise ValueError(f"spatten.{op}: scaling must be finite, got {scaling}")
    mask = _expand_attention_mask(op, mask, (b, h, lq, lk))
    if query_mask is not None:
        _require_bool_mask("query_mask", op, query_mask, (b, lq))
    dtype = compute_dtype(q, k, v)
    probs = masked_softmax(op, scaling * (q.to(dtype) @ k.to(dtype).transpose(-1, -2)), mask)
    return probs @ v.to(dtype), token_importance(probs, query_mask)
