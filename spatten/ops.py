"""SpAtten operators: documented wrappers over `torch.ops.spatten.*`, with their fake (meta) kernels.

Each op has a pure-PyTorch twin with the same signature in `spatten.ops_ref` that the tests compare against.
Float inputs may be float32, float16, bfloat16 or float64; the kernels compute in float64 when a float input is
float64 and in float32 otherwise, and return that dtype (importance statistics: float32 always). Bad input raises
ValueError (shapes, ranges, NaN) or TypeError (dtypes) naming the op and the argument; a NaN or infinite attention
logit on an allowed key raises ValueError in every attention op and its reference.

Autograd (docs/ops.md "Gradients"): attention_with_importance, progressive_attention, local_value_attention,
quantized_attention and fake_quantize are differentiable with respect to their float tensor inputs; importance,
top-k positions, quantized codes, scales, refetch flags and fetch counts are non-differentiable statistics.
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
    out [B, H, Lq, D] (compute dtype) = sum over kept j of probs[.., j] * v[.., j, :] (no renormalisation),
    kept int64 [B, H, Lq, k] (topk_indices order and ties), values_fetched int64 [B, H] (distinct V rows used).
    Gradient: to probs and v through out, exact with the kept positions held fixed (0 outside a row's top k).
    """
    return torch.ops.spatten.local_value_attention(probs, v, k)


def quantize_msb_lsb(
    x: torch.Tensor, msb_bits: int, lsb_bits: int, per: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric linear quantization to msb_bits + lsb_bits bits, split into MSB and LSB parts.

    x: [..., L, D]; per: "head" (one scale per [L, D] slice) or "token" (one per row). Returns msb int16 and
    lsb int16 [..., L, D] (lsb in [0, 2^lsb_bits)) and scale [..., 1, 1] or [..., L, 1] (float32; float64 for
    float64 x), with
    q = clamp(round_half_even(x / scale), -qmax, qmax) = msb * 2^lsb_bits + lsb, qmax = 2^(b-1) - 1.
    Needs msb_bits >= 1, lsb_bits >= 0, 2 <= msb_bits + lsb_bits <= 16 and finite x.
    """
    return torch.ops.spatten.quantize_msb_lsb(x, msb_bits, lsb_bits, per)


def dequantize_msb_lsb(
    msb: torch.Tensor, lsb: torch.Tensor | None, scale: torch.Tensor, lsb_bits: int
) -> torch.Tensor:
    """Inverse of quantize_msb_lsb; with lsb=None the missing LSBs are taken at their midpoint.

    msb, lsb: int16 [..., L, D]; scale: float32/float64 [..., 1, 1] or [..., L, 1]. Returns [..., L, D] in the
    scale's dtype:
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
    MSB+LSB keys. Returns (in the compute dtype) out [B, H, Lq, Dv] = probs @ v, probs [B, H, Lq, Lk] and
    refetch bool [B, H, Lq]. A row with no allowed key gives zeros and no refetch.
    Gradient: to q and v through out and probs, exact for the keys each row used (refetch held fixed); none to
    the codes or k_scale (use quantized_attention to reach K).
    """
    return torch.ops.spatten.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, threshold, lsb_bits, scaling)


def quantized_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    threshold: float,
    msb_bits: int,
    lsb_bits: int,
    per: str,
    scaling: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """progressive_attention on K quantized here (quantize_msb_lsb(k, msb_bits, lsb_bits, per)), differentiable in k.

    q: [B, H, Lq, D]; k: [B, H, Lk, D]; v: [B, H, Lk, Dv]; mask as in progressive_attention. Returns the same
    (out [B, H, Lq, Dv], probs [B, H, Lq, Lk], refetch bool [B, H, Lq]). Gradients: exact for q and v; for k the
    straight-through estimate (the gradient with respect to the dequantized keys each row used, passed to k).
    """
    return torch.ops.spatten.quantized_attention(q, k, v, mask, threshold, msb_bits, lsb_bits, per, scaling)


def fake_quantize(x: torch.Tensor, bits: int, per: str) -> torch.Tensor:
    """x [..., L, D] quantized to `bits` bits (quantize_msb_lsb(x, bits, 0, per)) and dequantized, in x's compute
    dtype. Gradient: straight-through (identity), exact almost everywhere except that rounding is ignored."""
    return torch.ops.spatten.fake_quantize(x, bits, per)


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
    out [B, H, Lq, Dv] (compute dtype) = probs @ v and importance float32 [B, Lk] =
    `token_importance(probs, query_mask)`, i.e. the sum over heads and valid query rows of probs.
    Gradient: to q, k and v through out, exact (probabilities recomputed in the backward); importance is a
    non-differentiable statistic.
    """
    return torch.ops.spatten.attention_with_importance(q, k, v, mask, scaling, query_mask)


# Fake kernels: output shapes and dtypes for torch.compile / meta tensors. They check what shapes alone decide.


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any float input is float64, else float32 (see the module docstring)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


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
        probs.new_empty((b, h, lq, v.shape[-1]), dtype=_compute_dtype(probs, v)),
        probs.new_empty((b, h, lq, k), dtype=torch.int64),
        probs.new_empty((b, h), dtype=torch.int64),
    )


@torch.library.register_fake("spatten::quantize_msb_lsb")
def _(x, msb_bits, lsb_bits, per):
    scale_shape = (*x.shape[:-2], 1 if per == "head" else x.shape[-2], 1)
    return (
        x.new_empty(x.shape, dtype=torch.int16),
        x.new_empty(x.shape, dtype=torch.int16),
        x.new_empty(scale_shape, dtype=_compute_dtype(x)),
    )


@torch.library.register_fake("spatten::dequantize_msb_lsb")
def _(msb, lsb, scale, lsb_bits):
    return msb.new_empty(msb.shape, dtype=scale.dtype)


@torch.library.register_fake("spatten::progressive_attention")
def _(q, k_msb, k_lsb, k_scale, v, mask, threshold, lsb_bits, scaling):
    return _progressive_outputs(q, v, _compute_dtype(q, v, k_scale))


def _progressive_outputs(q, v, dtype):
    b, h, lq, _ = q.shape
    lk, dv = v.shape[2], v.shape[3]
    return (
        q.new_empty((b, h, lq, dv), dtype=dtype),
        q.new_empty((b, h, lq, lk), dtype=dtype),
        q.new_empty((b, h, lq), dtype=torch.bool),
    )


@torch.library.register_fake("spatten::attention_with_importance")
def _(q, k, v, mask, scaling, query_mask=None):
    torch._check_value(q.dim() == 4 and k.dim() == 4 and v.dim() == 4,
                       lambda: "spatten.attention_with_importance: q, k, v must be [B, H, L, D]")
    b, h, lq, _ = q.shape
    return (
        q.new_empty((b, h, lq, v.shape[3]), dtype=_compute_dtype(q, k, v)),
        q.new_empty((b, k.shape[2]), dtype=torch.float32),
    )


@torch.library.register_fake("spatten::attention_backward")
def _(grad_out, q, k, v, mask, scaling):
    dtype = _compute_dtype(q, k, v)
    return q.new_empty(q.shape, dtype=dtype), k.new_empty(k.shape, dtype=dtype), v.new_empty(v.shape, dtype=dtype)


@torch.library.register_fake("spatten::progressive_attention_backward")
def _(grad_out, grad_probs, q, k_msb, k_lsb, k_scale, v, probs, refetch, lsb_bits, scaling):
    dtype = _compute_dtype(q, v, k_scale)
    return (q.new_empty(q.shape, dtype=dtype), q.new_empty(k_msb.shape, dtype=dtype),
            v.new_empty(v.shape, dtype=dtype))


@torch.library.register_fake("spatten::local_value_attention_backward")
def _(grad_out, probs, v, kept):
    dtype = _compute_dtype(probs, v, grad_out)
    return probs.new_empty(probs.shape, dtype=dtype), v.new_empty(v.shape, dtype=dtype)


# Composite ops defined here from the C++ ones (their kernels are those ops; their gradients are below).


@torch.library.custom_op("spatten::quantized_attention", mutates_args=())
def _quantized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                         threshold: float, msb_bits: int, lsb_bits: int, per: str,
                         scaling: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    k_msb, k_lsb, k_scale = torch.ops.spatten.quantize_msb_lsb(k, msb_bits, lsb_bits, per)
    return torch.ops.spatten.progressive_attention(q, k_msb, k_lsb, k_scale, v, mask, threshold, lsb_bits, scaling)


@_quantized_attention.register_fake
def _(q, k, v, mask, threshold, msb_bits, lsb_bits, per, scaling):
    return _progressive_outputs(q, v, _compute_dtype(q, k, v))


@torch.library.custom_op("spatten::fake_quantize", mutates_args=())
def _fake_quantize(x: torch.Tensor, bits: int, per: str) -> torch.Tensor:
    msb, lsb, scale = torch.ops.spatten.quantize_msb_lsb(x, bits, 0, per)
    return torch.ops.spatten.dequantize_msb_lsb(msb, lsb, scale, 0)


@_fake_quantize.register_fake
def _(x, bits, per):
    return x.new_empty(x.shape, dtype=_compute_dtype(x))


# ---- autograd (docs/ops.md "Gradients") -------------------------------------------------------------------------


def _cast_like(grad: torch.Tensor | None, like: torch.Tensor, needed: bool) -> torch.Tensor | None:
    """The gradient in the input's dtype, or None when autograd does not need it."""
    return grad.to(like.dtype) if needed and grad is not None else None


def _save_inputs(ctx, names: tuple[str, ...], inputs: tuple) -> None:
    """Tensors go through save_for_backward (version-checked); everything else onto ctx as attributes."""
    tensors = [x if isinstance(x, torch.Tensor) else None for x in inputs]
    ctx.save_for_backward(*tensors)
    ctx.tensor_names = names
    for name, x in zip(names, inputs):
        if not isinstance(x, torch.Tensor):
            setattr(ctx, name, x)


def _saved(ctx) -> dict:
    saved = dict(zip(ctx.tensor_names, ctx.saved_tensors))
    return {name: saved[name] if saved[name] is not None else getattr(ctx, name, None) for name in ctx.tensor_names}


def _attention_setup(ctx, inputs, output):
    q, k, v, mask, scaling, _query_mask = inputs
    _save_inputs(ctx, ("q", "k", "v", "mask", "scaling"), (q, k, v, mask, scaling))
    ctx.mark_non_differentiable(output[1])  # importance: a statistic of the probabilities


def _attention_backward(ctx, grad_out, _grad_importance):
    s = _saved(ctx)
    need = ctx.needs_input_grad
    if grad_out is None or not any(need[:3]):
        return None, None, None, None, None, None
    dq, dk, dv = torch.ops.spatten.attention_backward(grad_out, s["q"], s["k"], s["v"], s["mask"], s["scaling"])
    return (_cast_like(dq, s["q"], need[0]), _cast_like(dk, s["k"], need[1]), _cast_like(dv, s["v"], need[2]),
            None, None, None)


torch.library.register_autograd("spatten::attention_with_importance", _attention_backward,
                                setup_context=_attention_setup)


_PROGRESSIVE_NAMES = ("q", "k_msb", "k_lsb", "k_scale", "v", "mask", "threshold", "lsb_bits", "scaling")


def _progressive_setup(ctx, inputs, output):
    _save_inputs(ctx, _PROGRESSIVE_NAMES + ("probs", "refetch"), tuple(inputs) + (output[1], output[2]))
    ctx.mark_non_differentiable(output[2])


def _progressive_grads(ctx, grad_out, grad_probs, k_msb, k_lsb, k_scale):
    s = _saved(ctx)
    return torch.ops.spatten.progressive_attention_backward(
        grad_out, grad_probs, s["q"], k_msb, k_lsb, k_scale, s["v"], s["probs"], s["refetch"], s["lsb_bits"],
        s["scaling"])


def _progressive_backward(ctx, grad_out, grad_probs, _grad_refetch):
    s = _saved(ctx)
    need = ctx.needs_input_grad
    if (grad_out is None and grad_probs is None) or not (need[0] or need[4]):
        return (None,) * 9
    dq, _dk, dv = _progressive_grads(ctx, grad_out, grad_probs, s["k_msb"], s["k_lsb"], s["k_scale"])
    return _cast_like(dq, s["q"], need[0]), None, None, None, _cast_like(dv, s["v"], need[4]), None, None, None, None


torch.library.register_autograd("spatten::progressive_attention", _progressive_backward,
                                setup_context=_progressive_setup)


def _quantized_setup(ctx, inputs, output):
    q, k, v, mask, threshold, msb_bits, lsb_bits, per, scaling = inputs
    _save_inputs(ctx, ("q", "k", "v", "mask", "msb_bits", "lsb_bits", "per", "scaling", "probs", "refetch"),
                 (q, k, v, mask, msb_bits, lsb_bits, per, scaling, output[1], output[2]))
    ctx.mark_non_differentiable(output[2])


def _quantized_backward(ctx, grad_out, grad_probs, _grad_refetch):
    s = _saved(ctx)
    need = ctx.needs_input_grad
    if (grad_out is None and grad_probs is None) or not any(need[:3]):
        return (None,) * 9
    # The codes are recomputed (quantization is deterministic) rather than kept alive between passes.
    k_msb, k_lsb, k_scale = torch.ops.spatten.quantize_msb_lsb(s["k"], s["msb_bits"], s["lsb_bits"], s["per"])
    dq, dk, dv = _progressive_grads(ctx, grad_out, grad_probs, k_msb, k_lsb, k_scale)
    return (_cast_like(dq, s["q"], need[0]), _cast_like(dk, s["k"], need[1]), _cast_like(dv, s["v"], need[2]),
            None, None, None, None, None, None)


torch.library.register_autograd("spatten::quantized_attention", _quantized_backward, setup_context=_quantized_setup)


def _local_value_setup(ctx, inputs, output):
    probs, v, _k = inputs
    _save_inputs(ctx, ("probs", "v", "kept"), (probs, v, output[1]))


def _local_value_backward(ctx, grad_out, _grad_kept, _grad_fetched):
    s = _saved(ctx)
    need = ctx.needs_input_grad
    if grad_out is None or not (need[0] or need[1]):
        return None, None, None
    dprobs, dv = torch.ops.spatten.local_value_attention_backward(grad_out, s["probs"], s["v"], s["kept"])
    return _cast_like(dprobs, s["probs"], need[0]), _cast_like(dv, s["v"], need[1]), None


torch.library.register_autograd("spatten::local_value_attention", _local_value_backward,
                                setup_context=_local_value_setup)


def _fake_quantize_backward(ctx, grad):
    return grad.to(ctx.input_dtype), None, None  # straight-through: nothing is clipped (scale = max|x| / qmax)


def _fake_quantize_setup(ctx, inputs, output):
    ctx.input_dtype = inputs[0].dtype


torch.library.register_autograd("spatten::fake_quantize", _fake_quantize_backward, setup_context=_fake_quantize_setup)


def _no_gradient_setup(ctx, inputs, output):
    outputs = output if isinstance(output, tuple) else (output,)
    ctx.mark_non_differentiable(*[o for o in outputs if o.is_floating_point()])
    ctx.input_count = len(inputs)


def _no_gradient(ctx, *grads):
    return (None,) * ctx.input_count


# Statistics and codes: explicitly non-differentiable (outputs do not require grad, and autograd does not warn).
for _name in ("topk_indices", "token_importance", "head_importance", "quantize_msb_lsb", "dequantize_msb_lsb"):
    torch.library.register_autograd(f"spatten::{_name}", _no_gradient, setup_context=_no_gradient_setup)
