"""spatten.patch.core.attend's fused path (attention_with_importance): taken exactly when the probabilities
serve only token importance, and equal to attention and importance computed here from their definitions."""

import math

import pytest
import torch

from spatten import ops_ref
from spatten.config import SpAttenConfig
from spatten.patch import core, kernels


def explicit(q, k, v, mask, scaling, heads, query_valid):
    """Per-head softmax attention (GQA by index arithmetic) and importance over the heads that ran."""
    b, hq, lq, _ = q.shape
    groups = hq // k.shape[1]
    out = torch.zeros(b, hq, lq, v.shape[-1])
    importance = torch.zeros(b, k.shape[2], dtype=torch.float64)
    for bi in range(b):
        ran = range(hq) if heads is None else heads[bi].tolist()
        for h in ran:
            logits = scaling * q[bi, h].double() @ k[bi, h // groups].double().T
            allowed = torch.ones_like(logits, dtype=torch.bool) if mask is None else mask[bi, 0].expand_as(logits)
            probs = torch.softmax(logits.masked_fill(~allowed, -math.inf), -1).nan_to_num(0.0)
            out[bi, h] = (probs @ v[bi, h // groups].double()).float()
            importance[bi] += probs[query_valid[bi]].sum(0)
    return out, importance.float()


@pytest.mark.parametrize("impl", ["default", "reference"])
@pytest.mark.parametrize("with_heads", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_fused_path_matches_definitions(with_heads, kv_heads, impl, monkeypatch):
    if impl == "reference":  # the fallback when the C++ ops are not built
        monkeypatch.setattr(kernels, "op", lambda name: getattr(ops_ref, name))
    gen = torch.Generator().manual_seed(0)
    b, hq, lq, lk, d = 2, 4, 6, 9, 8
    q = torch.randn(b, hq, lq, d, generator=gen)
    k = torch.randn(b, kv_heads, lk, d, generator=gen)
    v = torch.randn(b, kv_heads, lk, d, generator=gen)
    key_valid = torch.ones(b, lk, dtype=torch.bool)
    key_valid[1, 6:] = False
    mask = key_valid[:, None, None, :] & torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    query_valid = torch.tensor([[True] * 6, [True, True, True, True, False, False]])
    heads = torch.tensor([[0, 3], [1, 2]]) if with_heads else None
    result = core.attend(q, k, v, mask, 0.3, SpAttenConfig(token_keep=0.5), heads=heads, need_importance=True,
                         query_valid=query_valid)
    assert result.probs is None and result.token_importance is not None  # the fused path
    want_out, want_importance = explicit(q, k, v, mask, 0.3, heads, query_valid)
    torch.testing.assert_close(result.out, want_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.token_importance, want_importance, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("lq", [1, 5])
def test_gqa_runs_on_the_kv_heads_without_repeating_them(lq, monkeypatch):
    """Query heads sharing a KV head run as one head of stacked rows: the op sees the 2 KV heads, not 6 copies,
    and the result is the per-head definition (decode row and prefill rows, padding, counted rows)."""
    gen = torch.Generator().manual_seed(3)
    b, hq, kv_heads, lk, d = 2, 6, 2, 11, 8
    q = torch.randn(b, hq, lq, d, generator=gen)
    k, v = (torch.randn(b, kv_heads, lk, d, generator=gen) for _ in range(2))
    key_valid = torch.ones(b, lk, dtype=torch.bool)
    key_valid[0, 8:] = False
    mask = key_valid[:, None, None, :] & torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    query_valid = torch.ones(b, lq, dtype=torch.bool)
    query_valid[1, 0] = lq == 1  # a padding query row when there are several
    seen = []
    real = kernels.attention_with_importance
    monkeypatch.setattr(kernels, "attention_with_importance", lambda *a: seen.append(a[1].shape) or real(*a))
    result = core.attend(q, k, v, mask, 0.3, SpAttenConfig(token_keep=0.5), need_importance=True,
                         query_valid=query_valid)
    assert seen == [torch.Size([b, kv_heads, lk, d])]
    want_out, want_importance = explicit(q, k, v, mask, 0.3, None, query_valid)
    torch.testing.assert_close(result.out, want_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.token_importance, want_importance, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("config,dropout", [
    (SpAttenConfig(token_keep=0.5, k_bits=(6, 4)), 0.0),
    (SpAttenConfig(token_keep=0.5, value_keep=0.5), 0.0),
    (SpAttenConfig(token_keep=0.5), 0.1),
])
def test_other_features_keep_the_probabilities(config, dropout):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=gen) for _ in range(3))
    valid = torch.ones(1, 5, dtype=torch.bool)
    result = core.attend(q, k, v, None, 0.3, config, need_importance=True, query_valid=valid, dropout=dropout)
    assert result.probs is not None
    torch.testing.assert_close(result.token_importance, result.probs.sum((1, 2)))


def test_the_fused_op_is_compiled():
    assert kernels.backend("attention_with_importance") == "compiled", "C++ op not built: ops_ref fallback in use"
    from spatten import ops

    assert kernels.op("attention_with_importance") is ops.attention_with_importance
