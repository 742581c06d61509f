"""NaN/Inf rows: the ops and their references follow one documented behaviour (docs/ops.md "Non-finite values").

A NaN or infinite attention logit on an allowed key (from q or k, or from scaling * q.k overflowing) raises
ValueError naming the op, in the op and in its reference alike. A non-finite logit on a masked key is never
looked at. Non-finite V is not checked: both propagate it through the same products.
"""

import math

import pytest
import torch

from spatten import ops, ops_ref

NON_FINITE = [math.nan, math.inf, -math.inf]


def inputs(seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=gen, dtype=dtype) for _ in range(3))
    return q, k, v


def causal():
    return torch.ones(4, 4, dtype=torch.bool).tril()[None, None]


def attention_calls(impl, q, k, v, mask, scaling=0.5):
    """Each attention op of impl on (q, k, v), K quantized by the op under test for the progressive one."""
    quantized = impl.quantize_msb_lsb(k, 6, 4, "token") if torch.isfinite(k).all() else None
    calls = {"attention_with_importance": lambda: impl.attention_with_importance(q, k, v, mask, scaling)}
    if quantized is not None:
        calls["progressive_attention"] = lambda: impl.progressive_attention(q, *quantized, v, mask, 0.3, 4, scaling)
    return calls


@pytest.mark.parametrize("bad", NON_FINITE)
@pytest.mark.parametrize("where", ["q", "k"])
def test_non_finite_allowed_logit_raises_in_op_and_reference(bad, where):
    q, k, v = inputs()
    (q if where == "q" else k)[0, 1, 2, 3] = bad  # row/key 2 is allowed (causal: rows 2, 3 see key 2)
    for impl in (ops, ops_ref):
        calls = attention_calls(impl, q, k, v, causal())
        assert calls, "nothing tested"
        for name, call in calls.items():
            with pytest.raises(ValueError, match=f"spatten.{name}: non-finite attention logits"):
                call()


def test_non_finite_q_row_raises_in_progressive_attention_of_both():
    q, k, v = inputs()
    q[0, 0, 1] = math.nan
    for impl in (ops, ops_ref):
        with pytest.raises(ValueError, match="spatten.progressive_attention: non-finite attention logits"):
            impl.progressive_attention(q, *impl.quantize_msb_lsb(k, 6, 4, "token"), v, causal(), 0.3, 4, 0.5)


def test_overflowing_logits_raise_in_op_and_reference():
    q, k, v = inputs()
    for impl in (ops, ops_ref):
        with pytest.raises(ValueError, match="non-finite attention logits"):
            impl.attention_with_importance(q * 1e30, k * 1e30, v, None, 1.0)


@pytest.mark.parametrize("bad", NON_FINITE)
def test_non_finite_logits_on_masked_keys_are_ignored_identically(bad):
    q, k, v = inputs()
    k[0, :, 3] = bad  # key 3: only row 3 may attend it under the causal mask; mask it out everywhere
    mask = causal().clone()
    mask[..., 3] = False
    got = ops.attention_with_importance(q, k, v, mask, 0.5)
    want = ops_ref.attention_with_importance(q, k, v, mask, 0.5)
    assert all(torch.isfinite(t).all() for t in got)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=0)


def test_non_finite_values_propagate_identically():
    q, k, v = inputs()
    v[0, 1, 2, 5] = math.inf
    v[0, 0, 0, 1] = math.nan
    for name in ("attention_with_importance", "progressive_attention"):
        got = attention_calls(ops, q, k, v, causal())[name]()[0]
        want = attention_calls(ops_ref, q, k, v, causal())[name]()[0]
        assert not torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, equal_nan=True)
    probs = torch.softmax(torch.randn(1, 2, 4, 4), -1)
    got, want = ops.local_value_attention(probs, v, 2)[0], ops_ref.local_value_attention(probs, v, 2)[0]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0, equal_nan=True)


def test_backward_of_non_finite_logits_raises():
    q, k, v = inputs(dtype=torch.float64)
    k[0, 1, 2, 3] = math.nan
    with pytest.raises(ValueError, match="spatten.attention_backward: non-finite attention logits"):
        torch.ops.spatten.attention_backward(torch.ones(1, 2, 4, 8, dtype=torch.float64), q, k, v, None, 0.5)
