"""Gradients of the spatten ops: float64 gradcheck of the C++ backward kernels, equality with the gradients that
autograd computes through the plain-PyTorch references, straight-through semantics for quantized K/V,
non-differentiable statistics, and opcheck (schema, fake kernels, autograd registration) of every op.

The semantics tested here are documented in docs/ops.md "Gradients".
"""

import warnings

import pytest
import torch

from spatten import ops, ops_ref

F64 = torch.float64


def tensors(*shapes, seed=0, dtype=F64, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=gen, dtype=dtype).requires_grad_(requires_grad) for s in shapes]


def attention_mask(lq, lk, seed=1):
    """Random bool mask [1, 1, Lq, Lk] with key 0 allowed everywhere and row 1 fully masked."""
    mask = torch.rand(1, 1, lq, lk, generator=torch.Generator().manual_seed(seed)) < 0.6
    mask[..., 0] = True
    mask[..., 1, :] = False
    return mask


def grads(fn, inputs, outputs_weights):
    """d(sum_i <w_i, output_i>)/d inputs for fn(*inputs) -> tuple of outputs."""
    outputs = fn(*inputs)
    total = sum((o * w).sum() for o, w in zip(outputs, outputs_weights))
    return torch.autograd.grad(total, inputs)


def assert_grads_match_reference(op_fn, ref_fn, inputs, n_outputs, seed=5):
    weights = tensors(*[o.shape for o in op_fn(*inputs)[:n_outputs]], seed=seed, requires_grad=False)
    got = grads(lambda *x: op_fn(*x)[:n_outputs], inputs, weights)
    want = grads(lambda *x: ref_fn(*x)[:n_outputs], inputs, weights)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-9)


# ---- attention_with_importance ----------------------------------------------------------------------------------
@pytest.mark.parametrize("masked", [False, True])
def test_attention_with_importance_gradcheck_and_reference(masked):
    q, k, v = tensors((2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 3))
    mask = attention_mask(5, 6) if masked else None
    fn = lambda q, k, v: ops.attention_with_importance(q, k, v, mask, 0.7)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))
    assert_grads_match_reference(lambda q, k, v: ops.attention_with_importance(q, k, v, mask, 0.7),
                                 lambda q, k, v: ops_ref.attention_with_importance(q, k, v, mask, 0.7), (q, k, v), 1)


def test_attention_importance_is_a_non_differentiable_statistic():
    q, k, v = tensors((1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "autograd kernel not registered" warning
        out, importance = ops.attention_with_importance(q, k, v, None, 0.5)
    assert out.requires_grad and not importance.requires_grad


# ---- progressive_attention / quantized_attention ----------------------------------------------------------------
def quantized(k, bits=(3, 4), per="token"):
    return ops.quantize_msb_lsb(k.detach(), bits[0], bits[1], per)


@pytest.mark.parametrize("threshold", [0.0, 0.45, 2.0])
def test_progressive_attention_gradcheck_in_q_and_v_through_out_and_probs(threshold):
    q, v = tensors((2, 2, 5, 4), (2, 2, 6, 3))
    (k,) = tensors((2, 2, 6, 4), seed=3, requires_grad=False)
    k_msb, k_lsb, k_scale = quantized(k)
    mask = attention_mask(5, 6)
    out, _, refetch = ops.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, threshold, 4, 0.6)
    if threshold == 0.45:
        assert 0 < int(refetch.sum()) < int(mask.any(-1).expand_as(refetch).sum())  # both key sets used

    def fn(q, v):
        return ops.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, threshold, 4, 0.6)[:2]

    assert torch.autograd.gradcheck(fn, (q, v))
    assert_grads_match_reference(
        lambda q, v: ops.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, threshold, 4, 0.6),
        lambda q, v: ops_ref.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, threshold, 4, 0.6),
        (q, v), 2)


def straight_through_reference(q, k, v, mask, threshold, msb_bits, lsb_bits, per, scaling):
    """ops_ref.progressive_attention with every dequantized key set replaced by k + (keys - k).detach(): the
    forward is the quantized one, the gradient reaches k as if the keys each row used were k itself."""
    k_msb, k_lsb, k_scale = ops_ref.quantize_msb_lsb(k.detach(), msb_bits, lsb_bits, per)
    coarse = ops_ref.dequantize_msb_lsb(k_msb, None, k_scale, lsb_bits)
    full = ops_ref.dequantize_msb_lsb(k_msb, k_lsb, k_scale, lsb_bits)
    _, _, refetch = ops_ref.progressive_attention(q.detach(), k_msb, k_lsb, k_scale, v.detach(), mask, threshold,
                                                  lsb_bits, scaling)
    probs = torch.where(refetch[..., None],
                        ops_ref.masked_softmax("ref", scaling * q @ (k + (full - k).detach()).transpose(-1, -2), mask),
                        ops_ref.masked_softmax("ref", scaling * q @ (k + (coarse - k).detach()).transpose(-1, -2),
                                               mask))
    return probs @ v, probs, refetch


@pytest.mark.parametrize("per", ["head", "token"])
@pytest.mark.parametrize("threshold", [0.0, 0.45, 2.0])
def test_quantized_attention_is_exact_in_q_v_and_straight_through_in_k(per, threshold):
    q, k, v = tensors((2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 3))
    mask = attention_mask(5, 6)
    args = (mask, threshold, 3, 4, per, 0.6)
    k_msb, k_lsb, k_scale = quantized(k, per=per)
    want_forward = ops.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, threshold, 4, 0.6)
    for got, want in zip(ops.quantized_attention(q, k, v, *args), want_forward):
        assert torch.equal(got, want)
    assert torch.autograd.gradcheck(lambda q, v: ops.quantized_attention(q, k, v, *args)[:2], (q, v))
    assert_grads_match_reference(lambda q, k, v: ops.quantized_attention(q, k, v, *args),
                                 lambda q, k, v: straight_through_reference(q, k, v, *args), (q, k, v), 2)


def test_fake_quantize_is_straight_through():
    (x,) = tensors((2, 3, 5, 8))
    for per in ("head", "token"):
        y = ops.fake_quantize(x, 6, per)
        msb, lsb, scale = ops_ref.quantize_msb_lsb(x.detach(), 6, 0, per)
        assert torch.equal(y.detach(), ops_ref.dequantize_msb_lsb(msb, lsb, scale, 0))
        weight = torch.randn_like(x)
        (grad,) = torch.autograd.grad((y * weight).sum(), x)
        assert torch.equal(grad, weight)


# ---- local_value_attention --------------------------------------------------------------------------------------
def test_local_value_attention_gradcheck_and_reference():
    probs, v = tensors((2, 2, 5, 7), (2, 2, 7, 3))
    probs = probs.detach().softmax(-1).requires_grad_()  # distinct values: no tie at the k-th largest
    fn = lambda p, v: ops.local_value_attention(p, v, 3)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (probs, v))
    assert_grads_match_reference(lambda p, v: ops.local_value_attention(p, v, 3),
                                 lambda p, v: ops_ref.local_value_attention(p, v, 3), (probs, v), 1)
    # a probability outside the row's top 3 gets no gradient
    (grad_p,) = torch.autograd.grad(fn(probs, v).sum(), probs)
    kept = ops.local_value_attention(probs, v, 3)[1]
    dropped = torch.ones_like(probs, dtype=torch.bool).scatter_(-1, kept, False)
    assert (grad_p[dropped] == 0).all() and (grad_p[~dropped] != 0).all()


def test_gradients_flow_through_the_patch_pipeline_into_q_k_v():
    """progressive probabilities -> local value pruning, as the patch chains them: gradients reach q, k and v."""
    q, k, v = tensors((1, 2, 6, 4), (1, 2, 6, 4), (1, 2, 6, 4))
    mask = torch.ones(6, 6, dtype=torch.bool).tril()[None, None]
    _, probs, _ = ops.quantized_attention(q, k, v, mask, 0.5, 6, 4, "token", 0.5)
    out, _, _ = ops.local_value_attention(probs, ops.fake_quantize(v, 8, "token"), 3)
    out.square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, k, v))


def test_half_inputs_get_half_gradients():
    q, k, v = tensors((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), dtype=torch.bfloat16)
    out, _ = ops.attention_with_importance(q, k, v, None, 0.5)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert q.grad.dtype == k.grad.dtype == v.grad.dtype == torch.bfloat16


# ---- statistics and codes ---------------------------------------------------------------------------------------
def test_statistics_and_codes_are_non_differentiable_without_warnings():
    (probs, attn_out, x) = tensors((1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outs = [ops.token_importance(probs), ops.head_importance(attn_out), ops.topk_indices(probs, 2),
                *ops.quantize_msb_lsb(x, 4, 4, "token")]
        msb, lsb, scale = ops.quantize_msb_lsb(x, 4, 4, "token")
        outs.append(ops.dequantize_msb_lsb(msb, lsb, scale, 4))
    assert not any(o.requires_grad for o in outs)


# ---- opcheck: schema, fake kernels, autograd registration -------------------------------------------------------
def opcheck_cases():
    q, k, v = tensors((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3), dtype=torch.float32)
    mask = attention_mask(3, 5)
    k_msb, k_lsb, k_scale = quantized(k)
    probs = torch.rand(2, 2, 3, 5, requires_grad=True)
    out, p, refetch = ops.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, 0.5, 4, 0.5)
    kept = ops.local_value_attention(probs, v, 2)[1]
    g = torch.randn(2, 2, 3, 3)
    s = torch.ops.spatten
    return [
        (s.attention_with_importance.default, (q, k, v, mask, 0.5, None)),
        (s.progressive_attention.default, (q, k_msb, k_lsb, k_scale, v, mask, 0.5, 4, 0.5)),
        (s.quantized_attention.default, (q, k, v, mask, 0.5, 3, 4, "token", 0.5)),
        (s.local_value_attention.default, (probs, v, 2)),
        (s.fake_quantize.default, (k, 6, "head")),
        (s.token_importance.default, (probs,)),
        (s.head_importance.default, (probs,)),
        (s.topk_indices.default, (probs, 2)),
        (s.quantize_msb_lsb.default, (k, 4, 4, "token")),
        (s.attention_backward.default, (g, q.detach(), k.detach(), v.detach(), mask, 0.5)),
        (s.progressive_attention_backward.default,
         (g, None, q.detach(), k_msb, k_lsb, k_scale, v.detach(), p.detach(), refetch, 4, 0.5)),
        (s.local_value_attention_backward.default, (g, probs.detach(), v.detach(), kept)),
    ]


@pytest.mark.parametrize("case", range(12))
def test_opcheck(case):
    op, args = opcheck_cases()[case]
    torch.library.opcheck(op, args)


def test_backward_results_do_not_depend_on_the_thread_count():
    q, k, v = tensors((2, 6, 40, 16), (2, 6, 50, 16), (2, 6, 50, 16), dtype=torch.float32, requires_grad=False)
    g = torch.randn(2, 6, 40, 16, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(40, 50, dtype=torch.bool).tril(10)[None, None]
    k_msb, k_lsb, k_scale = quantized(k)
    out, probs, refetch = ops.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, 0.3, 4, 0.25)
    kept = ops.local_value_attention(probs, v, 7)[1]
    s = torch.ops.spatten
    calls = [lambda: s.attention_backward(g, q, k, v, mask, 0.25),
             lambda: s.progressive_attention_backward(g, probs, q, k_msb, k_lsb, k_scale, v, probs, refetch, 4, 0.25),
             lambda: s.local_value_attention_backward(g, probs, v, kept)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = [call() for call in calls]
        torch.set_num_threads(2)
        multi = [call() for call in calls]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(single, multi):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
