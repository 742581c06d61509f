"""One attention call with SpAtten's per-call features: head gating, progressive K quantization, static V
quantization, local value pruning, and the probabilities that token importance needs.

Token pruning is not here: the callers (encoder.py, decoder.py) shorten K/V (and Q) before calling `attend`.
When a call needs none of the features it takes the fast path (`scaled_dot_product_attention`, no
probabilities materialised). When it needs the probabilities only for token importance (no K quantization, no
local value pruning, no dropout) it takes the fused path (`attention_with_importance`: the importance without
the [B, H, Lq, Lk] probability map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spatten.config import SpAttenConfig
from spatten.patch import kernels


@dataclass
class AttentionResult:
    """out: [B, Hq, Lq, D] in the value dtype, zeros on pruned heads.
    probs: float32 [B, Hk, Lq, Lk] for the computed heads, before dropout (None on the fast path).
    refetch: bool [B, Hk, Lq], rows whose K LSBs were fetched (None without K quantization).
    values_fetched: int64 [B, Hk], distinct V rows used (None without local value pruning).
    token_importance: float32 [B, Lk], the probability each key received, summed over the computed heads and
    the valid query rows (`token_importance(probs, query_valid)`); None unless `attend(need_importance=True)`.
    On the fused path probs is None and only this is returned.
    """

    out: torch.Tensor
    probs: torch.Tensor | None
    refetch: torch.Tensor | None
    values_fetched: torch.Tensor | None
    token_importance: torch.Tensor | None = None
    used_probs: torch.Tensor | None = None  # what multiplied V (after dropout and value pruning), if need_probs


def select_heads(x: torch.Tensor, groups: int, heads: torch.Tensor | None) -> torch.Tensor:
    """[B, H_kv, ...] -> [B, Hk, ...]: repeat each KV head for its `groups` query heads, keep `heads` [B, Hk]."""
    if groups > 1:
        x = x.repeat_interleave(groups, dim=1)
    if heads is not None:
        x = x.gather(1, heads.view(*heads.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))
    return x


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    config: SpAttenConfig,
    *,
    heads: torch.Tensor | None = None,
    need_probs: bool = False,
    need_importance: bool = False,
    query_valid: torch.Tensor | None = None,
    importance_rows: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout: float = 0.0,
) -> AttentionResult:
    """Attention of q [B, Hq, Lq, D] over k, v [B, H_kv, Lk, D] (GQA when H_kv < Hq).

    mask: bool broadcastable to [B, 1, Lq, Lk] (True = may attend) or None; is_causal only when mask is None
    and Lq == Lk. heads: int64 [B, Hk], the query heads that do work (None = all). A query row with no allowed
    key gives zeros. need_importance: also return `token_importance` over the query rows importance_rows [B, Lq]
    (default query_valid; None = all); need_probs: return the probabilities whatever else is asked.
    """
    b, hq, lq, d = q.shape
    groups = hq // k.shape[1]
    if importance_rows is None:
        importance_rows = query_valid
    causal = is_causal and mask is None
    quantized = config.quantizes
    if not (need_probs or need_importance or quantized or config.prunes_values):
        # SDPA's own causal mode, not a materialised mask: it skips the blocks above the diagonal (an explicit
        # tril mask made the prefill's attention ~40 % slower than the unpatched model's).
        if heads is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                                 is_causal=causal, enable_gqa=groups > 1)
        else:
            qh = select_heads(q, 1, heads)
            out = F.scaled_dot_product_attention(qh, select_heads(k, groups, heads), select_heads(v, groups, heads),
                                                 attn_mask=mask, dropout_p=dropout, scale=scaling, is_causal=causal)
            out = scatter_heads(out, heads, hq)
        return AttentionResult(out, None, None, None)
    if causal:
        mask = torch.ones(lq, k.shape[2], dtype=torch.bool, device=q.device).tril()[None, None]

    qh = select_heads(q, 1, heads)
    if config.v_bits is not None:
        v = kernels.fake_quantize(v, config.v_bits, config.quant_group)
    if (need_importance and not need_probs and config.k_bits is None and not config.prunes_values
            and dropout == 0.0 and q.device.type == "cpu"):
        # Probabilities only for token importance: fused, never materialising [B, Hk, Lq, Lk].
        if heads is None and groups > 1:
            out, importance = grouped_attention_with_importance(q, k, v, mask, scaling, importance_rows)
        else:
            out, importance = kernels.attention_with_importance(qh, select_heads(k, groups, heads),
                                                                select_heads(v, groups, heads), mask, scaling,
                                                                importance_rows)
        out = out.to(q.dtype)
        if heads is not None:
            out = scatter_heads(out, heads, hq)
        return AttentionResult(out, None, None, None, importance)
    vh = select_heads(v, groups, heads)
    refetch = None
    if config.k_bits is not None:
        # Quantizing the repeated heads gives the same codes (the scale groups lie within a KV head).
        out, probs, refetch = kernels.quantized_attention(qh, select_heads(k, groups, heads), vh, mask,
                                                          config.refetch_threshold, *config.k_bits,
                                                          config.quant_group, scaling)
    else:
        # Scale q, not the [Lq, Lk] logits, and work in place: these maps are the largest tensors of a forward.
        logits = (qh.float() * scaling) @ select_heads(k, groups, heads).float().transpose(-1, -2)
        if mask is not None:
            logits.masked_fill_(~mask, -math.inf)
        probs = torch.softmax(logits, dim=-1)
        if mask is not None:
            probs = probs.nan_to_num(nan=0.0)  # rows with no allowed key (out of place: autograd saves probs)
        out = None
    used = probs
    if dropout > 0.0:
        # Dropout acts on the output only: token importance and V selection read the undropped probabilities.
        used = F.dropout(probs, dropout, training=True)
        out = None
    values_fetched = None
    if config.prunes_values:
        out, values_fetched, selected = _local_value_attention(probs, used, vh, mask, query_valid, config.value_keep)
        if need_probs:
            used = used * selected()
    elif out is None:
        out = used @ vh.float()
    out = out.to(q.dtype)
    if heads is not None:
        out = scatter_heads(out, heads, hq)
    importance = None
    if need_importance:
        importance = kernels.token_importance(probs.detach(), importance_rows)
    return AttentionResult(out, probs, refetch, values_fetched, importance, used if need_probs else None)


def grouped_attention_with_importance(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                                      scaling: float, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """attention_with_importance for GQA without repeating K/V: the query heads that share a KV head (head h reads
    KV head h // groups, as transformers' repeat_kv) run as one head of groups·Lq query rows. Copying K/V once per
    query head cost more than the whole attention at batch 16 and a 2k cache.

    q [B, Hq, Lq, D]; k, v [B, H_kv, Lk, D]; mask bool broadcastable to [B, 1, Lq, Lk] or None; rows [B, Lq] or
    None. Returns out [B, Hq, Lq, Dv] and the importance [B, Lk] (summed over every head and counted row).
    """
    b, hq, lq, d = q.shape
    groups = hq // k.shape[1]
    stacked = q.reshape(b, k.shape[1], groups * lq, d)  # per KV head: its query heads' rows, one head after another
    if mask is not None and mask.shape[-2] > 1:
        mask = mask.repeat(1, 1, groups, 1)
    if rows is not None:
        rows = rows.repeat(1, groups)
    out, importance = kernels.attention_with_importance(stacked, k, v, mask, scaling, rows)
    return out.reshape(b, hq, lq, out.shape[-1]), importance


def value_keep_counts(mask: torch.Tensor | None, lk: int, value_keep: float) -> torch.Tensor | int:
    """V rows each query row keeps: ⌊allowed keys · value_keep⌋ (at least one), counting only the keys the row
    may attend (padding and causally masked keys excluded). An int when every row has all lk keys, else int64
    [B, 1, Lq] from the bool mask [B, 1, Lq, Lk]."""
    if mask is None:
        return min(lk, max(1, math.floor(lk * value_keep + 1e-9)))
    allowed = mask.sum(-1)
    counts = torch.floor(allowed.double() * value_keep + 1e-9).to(torch.int64).clamp(min=1)
    return torch.minimum(counts, allowed)


def _local_value_attention(probs: torch.Tensor, used: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                           query_valid: torch.Tensor | None, value_keep: float):
    """Local value pruning: each query row attends only the V rows of its top probabilities.

    probs (undropped, chooses the rows), used (what multiplies V: probs, or probs after dropout): float32
    [B, Hk, Lq, Lk]; v [B, Hk, Lk, D]; mask bool [B, 1, Lq, Lk] or None; query_valid bool [B, Lq] or None (all).
    Returns out float32 [B, Hk, Lq, D], values_fetched int64 [B, Hk] (distinct V rows the valid query rows
    read) and a function giving the bool [B, Hk, Lq, Lk] map of the entries kept.
    """
    lk = probs.shape[-1]
    counts = value_keep_counts(mask, lk, value_keep)
    if isinstance(counts, int) and used is probs:
        out, kept, values_fetched = kernels.local_value_attention(probs, v, counts)
        return out, values_fetched, lambda: torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, kept, True)
    # Row-dependent counts (padding, causal prefill) or dropout: mark each row's own top entries (stable
    # descending order, as topk_indices), zero the rest, and let the op gather the survivors.
    if isinstance(counts, int):
        counts = torch.full((1, 1, 1), counts, dtype=torch.int64, device=probs.device)
    order = torch.sort(probs.detach(), dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(lk, device=probs.device).expand_as(order))
    selected = rank < counts[..., None]
    width = int(counts.max())
    out, _, _ = kernels.local_value_attention(used * selected, v, width)
    read = selected if query_valid is None else selected & query_valid[:, None, :, None]
    return out, read.any(-2).sum(-1), lambda: selected


def scatter_heads(out: torch.Tensor, heads: torch.Tensor, total: int) -> torch.Tensor:
    """out [B, Hk, Lq, D] of heads [B, Hk] -> [B, total, Lq, D] with zeros on the other heads."""
    full = out.new_zeros(out.shape[0], total, *out.shape[2:])
    return full.scatter_(1, heads[:, :, None, None].expand_as(out), out)
