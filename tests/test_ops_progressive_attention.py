"""spatten.ops.progressive_attention: against the reference, against plain softmax attention on dequantized keys
(computed here independently), refetch semantics, masks, and bad inputs."""

import math

import pytest
import torch

from spatten import ops, ops_ref


def make_inputs(b, h, lq, lk, d, bits=(6, 4), per="head", seed=0, q_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=gen) * q_scale
    k = torch.randn(b, h, lk, d, generator=gen)
    v = torch.randn(b, h, lk, d, generator=gen)
    k_msb, k_lsb, k_scale = ops.quantize_msb_lsb(k, bits[0], bits[1], per)
    return q, k, (k_msb, k_lsb, k_scale), v


def plain_attention(q, keys, v, mask, scaling):
    """softmax(scaling * q k^T) v over allowed keys; a row with no allowed key is all zeros."""
    logits = scaling * q @ keys.transpose(-1, -2)
    if mask is not None:
        logits = logits.masked_fill(~mask, -math.inf)
    probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    return probs @ v, probs


def msb_only_keys(k_msb, k_scale, lsb_bits):
    return (k_msb.float() * 2**lsb_bits + (2 ** (lsb_bits - 1) if lsb_bits else 0)) * k_scale


def full_keys(k_msb, k_lsb, k_scale, lsb_bits):
    return (k_msb.float() * 2**lsb_bits + k_lsb.float()) * k_scale


def assert_matches_reference(args):
    got = ops.progressive_attention(*args)
    want = ops_ref.progressive_attention(*args)
    torch.testing.assert_close(got[0], want[0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got[1], want[1], atol=2e-6, rtol=1e-4)
    assert torch.equal(got[2], want[2])
    return got


def causal_mask(lq, lk):
    return torch.ones(lq, lk, dtype=torch.bool).tril(diagonal=lk - lq)


def test_threshold_zero_never_refetches_and_uses_msb_keys():
    q, _, (msb, lsb, scale), v = make_inputs(2, 3, 6, 10, 8)
    mask = causal_mask(6, 10)
    out, probs, refetch = ops.progressive_attention(q, msb, lsb, scale, v, mask, 0.0, 4, 8**-0.5)
    want_out, want_probs = plain_attention(q, msb_only_keys(msb, scale, 4), v, mask, 8**-0.5)
    assert not refetch.any()
    torch.testing.assert_close(probs, want_probs)
    torch.testing.assert_close(out, want_out)


def test_threshold_above_one_always_refetches_and_uses_full_keys():
    q, k, (msb, lsb, scale), v = make_inputs(2, 3, 6, 10, 8, bits=(8, 8))
    out, probs, refetch = ops.progressive_attention(q, msb, lsb, scale, v, None, 1.5, 8, 0.3)
    want_out, want_probs = plain_attention(q, full_keys(msb, lsb, scale, 8), v, None, 0.3)
    assert refetch.all()
    torch.testing.assert_close(probs, want_probs)
    torch.testing.assert_close(out, want_out)
    # 16-bit keys are close to the unquantized keys: the result is plain attention.
    torch.testing.assert_close(out, plain_attention(q, k, v, None, 0.3)[0], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("per", ["head", "token"])
def test_refetch_exactly_the_low_confidence_rows(per):
    q, _, (msb, lsb, scale), v = make_inputs(2, 4, 16, 24, 16, per=per, q_scale=2.0, seed=3)
    scaling = 0.25
    _, coarse = plain_attention(q, msb_only_keys(msb, scale, 4), v, None, scaling)
    max_prob = coarse.amax(-1)
    threshold = max_prob.median().item()
    threshold += 1e-3 if (max_prob - threshold).abs().min() < 1e-4 else 0.0  # stay clear of rounding at the edge
    out, probs, refetch = ops.progressive_attention(q, msb, lsb, scale, v, None, threshold, 4, scaling)
    assert torch.equal(refetch, max_prob < threshold)
    assert 0 < refetch.sum() < refetch.numel()
    _, fine = plain_attention(q, full_keys(msb, lsb, scale, 4), v, None, scaling)
    torch.testing.assert_close(probs, torch.where(refetch[..., None], fine, coarse))
    torch.testing.assert_close(out, probs @ v)


@pytest.mark.parametrize(
    "mask_shape", [None, (7, 11), (2, 1, 7, 11), (1, 1, 1, 11), (2, 3, 7, 11), (11,)], ids=str
)
def test_masks_broadcast(mask_shape):
    q, _, k_parts, v = make_inputs(2, 3, 7, 11, 8, seed=4)
    mask = None
    if mask_shape is not None:
        mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(5)) < 0.6
    for threshold in (0.0, 0.3, 2.0):
        assert_matches_reference((q, *k_parts, v, mask, threshold, 4, 8**-0.5))


def test_fully_masked_rows_give_zeros_and_no_refetch():
    q, _, k_parts, v = make_inputs(1, 2, 4, 5, 8)
    mask = torch.ones(1, 2, 4, 5, dtype=torch.bool)
    mask[0, 0, 1] = False
    mask[0, 1] = False
    out, probs, refetch = ops.progressive_attention(q, *k_parts, v, mask, 2.0, 4, 1.0)
    assert (probs[0, 0, 1] == 0).all() and (out[0, 0, 1] == 0).all() and not refetch[0, 0, 1]
    assert (probs[0, 1] == 0).all() and (out[0, 1] == 0).all() and not refetch[0, 1].any()
    assert refetch[0, 0, [0, 2, 3]].all()
    torch.testing.assert_close(probs[0, 0, 0].sum(), torch.tensor(1.0))


def test_no_keys_at_all():
    q, _, k_parts, v = make_inputs(1, 2, 3, 0, 4)
    out, probs, refetch = ops.progressive_attention(q, *k_parts, v, None, 0.5, 4, 1.0)
    assert out.shape == (1, 2, 3, 4) and (out == 0).all() and probs.shape == (1, 2, 3, 0) and not refetch.any()


@pytest.mark.parametrize("bits,per", [((6, 4), "head"), ((8, 4), "token"), ((4, 0), "head"), ((1, 1), "token")])
def test_matches_reference_across_bit_widths(bits, per):
    q, _, k_parts, v = make_inputs(2, 2, 9, 13, 16, bits=bits, per=per, seed=6)
    for threshold in (0.05, 0.1, 0.5):
        assert_matches_reference((q, *k_parts, v, causal_mask(9, 13), threshold, bits[1], 0.25))


def test_gpt2_and_bert_like_shapes():
    q, _, k_parts, v = make_inputs(1, 12, 1, 200, 64, seed=7)  # one decode step
    assert_matches_reference((q, *k_parts, v, None, 0.1, 4, 64**-0.5))
    q, _, k_parts, v = make_inputs(2, 12, 64, 64, 64, seed=8)  # encoder with padding
    pad = torch.ones(2, 1, 1, 64, dtype=torch.bool)
    pad[1, ..., 40:] = False
    assert_matches_reference((q, *k_parts, v, pad, 0.1, 4, 64**-0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_and_non_contiguous(dtype):
    q, _, (msb, lsb, scale), v = make_inputs(2, 3, 5, 9, 8, seed=9)
    q_t = q.transpose(1, 2).contiguous().transpose(1, 2).to(dtype)
    v_t = v.transpose(2, 3).contiguous().transpose(2, 3).to(dtype)
    msb_t = msb.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (q_t.is_contiguous() or v_t.is_contiguous() or msb_t.is_contiguous())
    assert_matches_reference((q_t, msb_t, lsb, scale, v_t, causal_mask(5, 9), 0.3, 4, 8**-0.5))


def test_large_but_finite_logits():
    q, _, k_parts, v = make_inputs(1, 2, 4, 6, 8, q_scale=300.0, seed=10)
    out, probs, _ = assert_matches_reference((q, *k_parts, v, None, 0.5, 4, 1.0))
    assert torch.isfinite(out).all() and torch.isfinite(probs).all()


def test_bad_inputs():
    q, _, (msb, lsb, scale), v = make_inputs(2, 3, 4, 5, 8)
    good = dict(q=q, k_msb=msb, k_lsb=lsb, k_scale=scale, v=v, mask=None, threshold=0.1, lsb_bits=4, scaling=1.0)
    cases = [
        (dict(k_msb=msb[:, :, :3]), ValueError, "k_msb must have shape"),
        (dict(k_msb=msb.float()), TypeError, "k_msb must be"),
        (dict(q=q.int()), TypeError, "q must be a floating dtype"),
        (dict(q=q[0]), ValueError, r"q must be \[B, H, Lq, D\]"),
        (dict(v=v[:1]), ValueError, "v must have shape"),
        (dict(k_scale=scale[..., :1, :].expand(2, 3, 2, 1)), ValueError, "k_scale must be"),
        (dict(mask=torch.ones(4, 6, dtype=torch.bool)), ValueError, "mask .*broadcast"),
        (dict(mask=torch.ones(4, 5)), TypeError, "mask must be"),
        (dict(lsb_bits=16), ValueError, r"lsb_bits must be in \[0, 15\]"),
        (dict(threshold=float("nan")), ValueError, "threshold is NaN"),
        (dict(scaling=float("inf")), ValueError, "scaling must be finite"),
    ]
    for change, error, message in cases:
        for impl in (ops, ops_ref):
            with pytest.raises(error, match=message):
                impl.progressive_attention(**{**good, **change})


def test_opcheck():
    q, _, k_parts, v = make_inputs(2, 3, 4, 5, 8)
    for mask in (None, causal_mask(4, 5)):
        for threshold in (0.0, 0.4, 2.0):
            args = (q, *k_parts, v, mask, threshold, 4, 8**-0.5)
            torch.library.opcheck(torch.ops.spatten.progressive_attention.default, args)


def test_results_do_not_depend_on_the_thread_count():
    q, _, k_parts, v = make_inputs(2, 12, 16, 40, 16, seed=11)
    args = (q, *k_parts, v, causal_mask(16, 40), 0.2, 4, 0.25)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops.progressive_attention(*args)
        torch.set_num_threads(2)
        multi = ops.progressive_attention(*args)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(single, multi))
