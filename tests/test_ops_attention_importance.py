"""spatten.ops.attention_with_importance: against the reference, against plain softmax attention and
token importance computed here independently, adversarial masks, dtypes, layouts, opcheck and bad inputs."""

import math

import pytest
import torch

from spatten import ops, ops_ref


def make_inputs(b, h, lq, lk, d, dv=None, seed=0, q_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=gen) * q_scale
    k = torch.randn(b, h, lk, d, generator=gen)
    v = torch.randn(b, h, lk, dv or d, generator=gen)
    return q, k, v


def independent(q, k, v, mask, scaling, query_mask):
    """Float64 attention and importance from the contract, by explicit sums over heads and valid rows."""
    logits = scaling * q.double() @ k.double().transpose(-1, -2)
    b, h, lq, lk = logits.shape
    allowed = torch.ones(b, h, lq, lk, dtype=torch.bool) if mask is None else mask.expand(b, h, lq, lk)
    logits = logits.masked_fill(~allowed, -math.inf)
    probs = torch.softmax(logits, dim=-1)
    probs = torch.where(allowed.any(-1, keepdim=True), probs, torch.zeros(()))  # rows with no allowed key
    out = probs @ v.double()
    importance = torch.zeros(b, lk, dtype=torch.float64)
    for bi in range(b):
        for i in range(lq):
            if query_mask is None or query_mask[bi, i]:
                importance[bi] += probs[bi, :, i].sum(0)
    return out.float(), importance.float()


def causal_mask(lq, lk):
    return torch.ones(lq, lk, dtype=torch.bool).tril(diagonal=lk - lq)


def check(q, k, v, mask, scaling, query_mask, atol=2e-5):
    out, imp = ops.attention_with_importance(q, k, v, mask, scaling, query_mask)
    want_out, want_imp = independent(q, k, v, mask, scaling, query_mask)
    lq = q.shape[2]
    torch.testing.assert_close(out, want_out, atol=atol, rtol=1e-4)
    torch.testing.assert_close(imp, want_imp, atol=atol * max(lq, 1), rtol=1e-4)
    ref_out, ref_imp = ops_ref.attention_with_importance(q, k, v, mask, scaling, query_mask)
    torch.testing.assert_close(out, ref_out, atol=atol, rtol=1e-4)
    torch.testing.assert_close(imp, ref_imp, atol=atol * max(lq, 1), rtol=1e-4)
    assert out.dtype == imp.dtype == torch.float32
    return out, imp


@pytest.mark.parametrize(
    "mask_shape", [None, (7, 11), (2, 1, 7, 11), (1, 1, 1, 11), (2, 3, 7, 11), (11,), (2, 1, 1, 11)], ids=str
)
@pytest.mark.parametrize("with_query_mask", [False, True])
def test_random_masks_broadcast(mask_shape, with_query_mask):
    q, k, v = make_inputs(2, 3, 7, 11, 8, dv=5, seed=1)
    gen = torch.Generator().manual_seed(2)
    mask = None if mask_shape is None else torch.rand(mask_shape, generator=gen) < 0.6
    query_mask = (torch.rand(2, 7, generator=gen) < 0.7) if with_query_mask else None
    check(q, k, v, mask, 8**-0.5, query_mask)


def test_padding_mask_matches_token_importance_on_explicit_probs():
    q, k, v = make_inputs(2, 12, 64, 64, 64, seed=3)
    pad = torch.ones(2, 64, dtype=torch.bool)
    pad[1, 40:] = False
    mask = pad[:, None, None, :]
    out, imp = check(q, k, v, mask, 64**-0.5, pad)
    # Padding keys get nothing; the importance of one batch row totals heads x valid query rows.
    assert (imp[1, 40:] == 0).all()
    torch.testing.assert_close(imp.sum(-1), torch.tensor([12.0 * 64, 12.0 * 40]), rtol=1e-5, atol=1e-2)


def test_causal_prefill_and_block_boundaries():
    for lq in (1, 31, 63, 64, 65, 130):  # around the query block size
        q, k, v = make_inputs(1, 2, lq, lq, 16, seed=lq)
        check(q, k, v, causal_mask(lq, lq), 0.25, None)


def test_decode_rows():
    q, k, v = make_inputs(2, 12, 1, 200, 64, seed=4)
    check(q, k, v, None, 64**-0.5, torch.ones(2, 1, dtype=torch.bool))
    check(q, k, v, causal_mask(1, 200), 64**-0.5, None)


def test_fully_masked_rows_give_zeros_and_no_importance():
    q, k, v = make_inputs(1, 2, 4, 5, 8)
    mask = torch.ones(1, 2, 4, 5, dtype=torch.bool)
    mask[0, 0, 1] = False
    mask[0, 1] = False
    out, imp = check(q, k, v, mask, 1.0, None)
    assert (out[0, 0, 1] == 0).all() and (out[0, 1] == 0).all()
    # Head 0 has three rows with keys, head 1 none: the importance totals 3.
    torch.testing.assert_close(imp.sum(), torch.tensor(3.0))
    out, imp = ops.attention_with_importance(q, k, v, torch.zeros(5, dtype=torch.bool), 1.0, None)
    assert (out == 0).all() and (imp == 0).all()


def test_blocks_that_allow_only_early_keys_or_none():
    """Each 64-row query block stops at the last key any of its rows may attend: a block allowing only the first
    keys, a block allowing none, and a causal tail, checked against the independent sums."""
    q, k, v = make_inputs(2, 2, 150, 150, 16, seed=6)
    mask = causal_mask(150, 150).repeat(2, 1, 1, 1)
    mask[0, :, :64, 10:] = False  # first block: keys < 10 only
    mask[0, :, 64:128] = False  # second block: no key at all
    mask[1, :, :, 140:] = False  # a padded row: no query reaches the last keys
    out, imp = check(q, k, v, mask, 0.25, None)
    assert (out[0, :, 64:128] == 0).all() and (imp[0, 10:64] > 0).all() and (imp[1, 140:] == 0).all()


def test_query_mask_drops_rows_from_importance_only():
    q, k, v = make_inputs(2, 3, 6, 9, 8, seed=5)
    none = torch.zeros(2, 6, dtype=torch.bool)
    out_all, imp_all = ops.attention_with_importance(q, k, v, None, 0.3, None)
    out_none, imp_none = ops.attention_with_importance(q, k, v, None, 0.3, none)
    assert torch.equal(out_all, out_none) and (imp_none == 0).all()
    torch.testing.assert_close(imp_all.sum(-1), torch.full((2,), 18.0))


def test_empty_dims():
    q, k, v = make_inputs(1, 2, 3, 0, 4)
    out, imp = ops.attention_with_importance(q, k, v, None, 1.0, None)
    assert out.shape == (1, 2, 3, 4) and (out == 0).all() and imp.shape == (1, 0)
    q, k, v = make_inputs(1, 2, 0, 5, 4)
    out, imp = ops.attention_with_importance(q, k, v, None, 1.0, torch.zeros(1, 0, dtype=torch.bool))
    assert out.shape == (1, 2, 0, 4) and imp.shape == (1, 5) and (imp == 0).all()
    q, k, v = make_inputs(0, 2, 3, 5, 4)
    out, imp = ops.attention_with_importance(q, k, v, None, 1.0, None)
    assert out.shape == (0, 2, 3, 4) and imp.shape == (0, 5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_and_non_contiguous(dtype):
    q, k, v = make_inputs(2, 3, 5, 9, 8, seed=6)
    q_t = q.transpose(1, 2).contiguous().transpose(1, 2).to(dtype)
    k_t = k.transpose(2, 3).contiguous().transpose(2, 3).to(dtype)
    v_t = v.transpose(0, 1).contiguous().transpose(0, 1).to(dtype)
    assert not (q_t.is_contiguous() or k_t.is_contiguous() or v_t.is_contiguous())
    qm = torch.tensor([[True, True, False, True, True], [True, False, True, True, True]])
    mask = causal_mask(5, 9).t().contiguous().t()  # a non-contiguous mask too
    # The kernel computes in float32 from the rounded inputs: compare against those.
    check(q_t, k_t, v_t, mask, 8**-0.5, qm)


def test_large_but_finite_logits():
    q, k, v = make_inputs(1, 2, 4, 6, 8, q_scale=300.0, seed=7)
    out, imp = check(q, k, v, None, 1.0, None, atol=1e-4)
    assert torch.isfinite(out).all() and torch.isfinite(imp).all()


def test_bad_inputs():
    q, k, v = make_inputs(2, 3, 4, 5, 8)
    good = dict(q=q, k=k, v=v, mask=None, scaling=1.0, query_mask=None)
    cases = [
        (dict(q=q.int()), TypeError, "q must be a floating dtype"),
        (dict(k=k.long()), TypeError, "k must be a floating dtype"),
        (dict(q=q[0]), ValueError, r"q must be \[B, H, Lq, D\]"),
        (dict(k=k[..., :4]), ValueError, "k must have shape"),
        (dict(k=k[:1]), ValueError, "k must have shape"),
        (dict(v=v[:, :, :3]), ValueError, "v must have shape"),
        (dict(mask=torch.ones(4, 6, dtype=torch.bool)), ValueError, "mask .*broadcast"),
        (dict(mask=torch.ones(4, 5)), TypeError, "mask must be"),
        (dict(query_mask=torch.ones(2, 4)), TypeError, "query_mask must be"),
        (dict(query_mask=torch.ones(2, 5, dtype=torch.bool)), ValueError, "query_mask must have shape"),
        (dict(scaling=float("nan")), ValueError, "scaling must be finite"),
        (dict(scaling=float("inf")), ValueError, "scaling must be finite"),
    ]
    for change, error, message in cases:
        for impl in (ops, ops_ref):
            with pytest.raises(error, match="spatten.attention_with_importance: " + message):
                impl.attention_with_importance(**{**good, **change})


def test_opcheck():
    q, k, v = make_inputs(2, 3, 4, 5, 8, dv=6)
    qm = torch.tensor([[True, False, True, True], [True, True, True, False]])
    for mask in (None, causal_mask(4, 5)):
        for query_mask in (None, qm):
            torch.library.opcheck(torch.ops.spatten.attention_with_importance.default,
                                  (q, k, v, mask, 8**-0.5, query_mask))


def test_results_do_not_depend_on_the_thread_count():
    q, k, v = make_inputs(2, 12, 100, 120, 16, seed=8)
    qm = torch.rand(2, 100, generator=torch.Generator().manual_seed(9)) < 0.8
    args = (q, k, v, causal_mask(100, 120), 0.25, qm)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops.attention_with_importance(*args)
        torch.set_num_threads(2)
        multi = ops.attention_with_importance(*args)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(single, multi))
