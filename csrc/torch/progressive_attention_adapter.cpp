// ATen adapters for progressive-quantization attention and its backward: one fused kernel per (batch, head), in
// parallel. float64 inputs run the double kernels (gradcheck); everything else computes in float32.
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>

#include "adapters.h"
#include "checks.h"
#include "kernels/attention_backward.h"
#include "kernels/progressive_attention.h"

namespace spatten::torch_ops {
namespace {

// The validated inputs of one progressive_attention call, shared by forward and backward.
struct ProgressiveCall {
  int64_t b, h, lq, d, lk, dv, scale_rows;
  at::ScalarType dtype;
  at::Tensor q, v, msb, lsb, scale, mask;  // contiguous, in dtype; mask: expanded view or undefined
};

ProgressiveCall checked_progressive(const char* op, const at::Tensor& q, const at::Tensor& k_msb,
                                    const at::Tensor& k_lsb, const at::Tensor& k_scale, const at::Tensor& v,
                                    const std::optional<at::Tensor>& mask, int64_t lsb_bits, double scaling) {
  check_float_4d(op, "q", q, "[B, H, Lq, D]");
  check_float_4d(op, "v", v, "[B, H, Lk, Dv]");
  check_dtype(op, "k_msb", k_msb, at::kShort);
  check_dtype(op, "k_lsb", k_lsb, at::kShort);
  check_cpu(op, "k_msb", k_msb);
  check_cpu(op, "k_lsb", k_lsb);
  ProgressiveCall c{};
  c.b = q.size(0), c.h = q.size(1), c.lq = q.size(2), c.d = q.size(3), c.lk = v.size(2), c.dv = v.size(3);
  TORCH_CHECK_VALUE(v.size(0) == c.b && v.size(1) == c.h, op, ": v must have shape [B, H, Lk, Dv] with B, H = ", c.b,
                    ", ", c.h, " from q, got ", v.sizes());
  check_shape(op, "k_msb", k_msb, {c.b, c.h, c.lk, c.d});
  check_shape(op, "k_lsb", k_lsb, {c.b, c.h, c.lk, c.d});
  check_lsb_bits(op, lsb_bits);
  TORCH_CHECK_VALUE(std::isfinite(scaling), op, ": scaling must be finite, got ", scaling);
  c.dtype = compute_dtype({q, v, k_scale});
  c.scale = as_contiguous(checked_scale(op, "k_scale", k_scale, k_msb, &c.scale_rows), c.dtype);
  c.mask = checked_attention_mask(op, mask, {c.b, c.h, c.lq, c.lk});
  c.q = as_contiguous(q, c.dtype);
  c.v = as_contiguous(v, c.dtype);
  c.msb = k_msb.contiguous();
  c.lsb = k_lsb.contiguous();
  return c;
}

template <typename T>
spatten::ProgressiveHeadInputsT<T> head_inputs(const ProgressiveCall& c, int64_t bh) {
  const int64_t bi = bh / c.h, hi = bh % c.h;
  spatten::ProgressiveHeadInputsT<T> in{};
  in.q = c.q.data_ptr<T>() + bh * c.lq * c.d;
  in.k_msb = c.msb.data_ptr<int16_t>() + bh * c.lk * c.d;
  in.k_lsb = c.lsb.data_ptr<int16_t>() + bh * c.lk * c.d;
  in.k_scale = c.scale.data_ptr<T>() + bh * c.scale_rows;
  in.k_scale_per_token = c.scale_rows != 1;
  in.v = c.v.data_ptr<T>() + bh * c.lk * c.dv;
  set_head_mask(in, c.mask, bi, hi);
  return in;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> progressive_attention_cpu(
    const at::Tensor& q, const at::Tensor& k_msb, const at::Tensor& k_lsb, const at::Tensor& k_scale,
    const at::Tensor& v, const std::optional<at::Tensor>& mask, double threshold, int64_t lsb_bits,
    double scaling) {
  constexpr const char* op = "spatten.progressive_attention";
  TORCH_CHECK_VALUE(!std::isnan(threshold), op, ": threshold is NaN");
  const ProgressiveCall c = checked_progressive(op, q, k_msb, k_lsb, k_scale, v, mask, lsb_bits, scaling);
  const auto opts = q.options().dtype(c.dtype);
  at::Tensor out = at::empty({c.b, c.h, c.lq, c.dv}, opts);
  at::Tensor probs = at::empty({c.b, c.h, c.lq, c.lk}, opts);
  at::Tensor refetch = at::empty({c.b, c.h, c.lq}, opts.dtype(at::kBool));
  if (c.b * c.h == 0) return {out, probs, refetch};

  std::atomic<bool> finite{true};
  dispatch_compute(c.dtype, [&](auto zero) {
    using T = decltype(zero);
    const spatten::ProgressiveParamsT<T> params{c.lq, c.lk, c.d, c.dv, static_cast<T>(threshold),
                                                static_cast<int>(lsb_bits), static_cast<T>(scaling)};
    T* out_ptr = out.data_ptr<T>();
    T* probs_ptr = probs.data_ptr<T>();
    bool* refetch_ptr = refetch.data_ptr<bool>();
    at::parallel_for(0, c.b * c.h, row_grain(c.lq * c.lk), [&](int64_t begin, int64_t end) {
      spatten::ProgressiveScratchT<T> scratch;
      for (int64_t bh = begin; bh < end; ++bh)
        if (!spatten::progressive_attention_head(head_inputs<T>(c, bh), params, out_ptr + bh * c.lq * c.dv,
                                                 probs_ptr + bh * c.lq * c.lk, refetch_ptr + bh * c.lq, scratch))
          finite = false;
    });
  });
  check_finite_logits(op, finite);
  return {out, probs, refetch};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> progressive_attention_backward_cpu(
    const std::optional<at::Tensor>& grad_out, const std::optional<at::Tensor>& grad_probs, const at::Tensor& q,
    const at::Tensor& k_msb, const at::Tensor& k_lsb, const at::Tensor& k_scale, const at::Tensor& v,
    const at::Tensor& probs, const at::Tensor& refetch, int64_t lsb_bits, double scaling) {
  constexpr const char* op = "spatten.progressive_attention_backward";
  const ProgressiveCall c = checked_progressive(op, q, k_msb, k_lsb, k_scale, v, std::nullopt, lsb_bits, scaling);
  check_shape(op, "probs", probs, {c.b, c.h, c.lq, c.lk});
  check_dtype(op, "refetch", refetch, at::kBool);
  check_shape(op, "refetch", refetch, {c.b, c.h, c.lq});
  const at::Tensor p = as_contiguous(probs, c.dtype);
  const at::Tensor rf = refetch.contiguous();
  at::Tensor go, gp;
  if (grad_out.has_value()) {
    check_shape(op, "grad_out", *grad_out, {c.b, c.h, c.lq, c.dv});
    go = as_contiguous(*grad_out, c.dtype);
  }
  if (grad_probs.has_value()) {
    check_shape(op, "grad_probs", *grad_probs, {c.b, c.h, c.lq, c.lk});
    gp = as_contiguous(*grad_probs, c.dtype);
  }
  const auto opts = q.options().dtype(c.dtype);
  at::Tensor grad_q = at::empty({c.b, c.h, c.lq, c.d}, opts);
  at::Tensor grad_k = at::empty({c.b, c.h, c.lk, c.d}, opts);
  at::Tensor grad_v = at::empty({c.b, c.h, c.lk, c.dv}, opts);
  if (c.b * c.h == 0) return {grad_q, grad_k, grad_v};

  dispatch_compute(c.dtype, [&](auto zero) {
    using T = decltype(zero);
    const spatten::ProgressiveParamsT<T> params{c.lq, c.lk, c.d, c.dv, T(0), static_cast<int>(lsb_bits),
                                                static_cast<T>(scaling)};
    const spatten::AttentionGradShape shape{c.lq, c.lk, c.d, c.dv};
    at::parallel_for(0, c.b * c.h, row_grain(c.lq * c.lk), [&](int64_t begin, int64_t end) {
      std::vector<T> coarse(static_cast<size_t>(c.lk * c.d)), full(coarse.size());
      spatten::AttentionGradScratch<T> scratch;
      for (int64_t bh = begin; bh < end; ++bh) {
        const auto in = head_inputs<T>(c, bh);
        spatten::progressive_keys(in, params, /*with_lsb=*/false, coarse.data());
        spatten::progressive_keys(in, params, /*with_lsb=*/true, full.data());
        spatten::AttentionGradInputs<T> g{};
        g.q = in.q;
        g.keys = coarse.data();
        g.keys_alt = full.data();
        g.row_alt = rf.data_ptr<bool>() + bh * c.lq;
        g.v = in.v;
        g.probs = p.data_ptr<T>() + bh * c.lq * c.lk;
        g.grad_out = go.defined() ? go.data_ptr<T>() + bh * c.lq * c.dv : nullptr;
        g.grad_probs = gp.defined() ? gp.data_ptr<T>() + bh * c.lq * c.lk : nullptr;
        spatten::attention_backward_head(g, shape, static_cast<T>(scaling), grad_q.data_ptr<T>() + bh * c.lq * c.d,
                                         grad_k.data_ptr<T>() + bh * c.lk * c.d,
                                         grad_v.data_ptr<T>() + bh * c.lk * c.dv, scratch);
      }
    });
  });
  return {grad_q, grad_k, grad_v};
}

}  // namespace spatten::torch_ops
