// ATen adapters for attention fused with token importance and its backward: one kernel call per (batch, head), in
// parallel; the per-head importance goes to a [B, H, Lk] scratch that is summed over heads afterwards in a fixed
// order. float64 inputs run the double kernels (gradcheck); everything else computes in float32.
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>

#include "adapters.h"
#include "checks.h"
#include "kernels/attention_backward.h"
#include "kernels/attention_importance.h"

namespace spatten::torch_ops {
namespace {

// The validated inputs of one attention call, shared by forward and backward.
struct AttentionCall {
  int64_t b, h, lq, d, lk, dv;
  at::ScalarType dtype;
  at::Tensor q, k, v, mask, query_mask;  // contiguous in dtype; mask: expanded view; undefined when absent
};

AttentionCall checked_attention(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const std::optional<at::Tensor>& mask, double scaling) {
  check_float_4d(op, "q", q, "[B, H, Lq, D]");
  check_float_4d(op, "k", k, "[B, H, Lk, D]");
  check_float_4d(op, "v", v, "[B, H, Lk, Dv]");
  AttentionCall c{};
  c.b = q.size(0), c.h = q.size(1), c.lq = q.size(2), c.d = q.size(3), c.lk = k.size(2), c.dv = v.size(3);
  TORCH_CHECK_VALUE(k.size(0) == c.b && k.size(1) == c.h && k.size(3) == c.d, op,
                    ": k must have shape [B, H, Lk, D] with B, H, D = ", c.b, ", ", c.h, ", ", c.d, " from q, got ",
                    k.sizes());
  TORCH_CHECK_VALUE(v.size(0) == c.b && v.size(1) == c.h && v.size(2) == c.lk, op,
                    ": v must have shape [B, H, Lk, Dv] with B, H, Lk = ", c.b, ", ", c.h, ", ", c.lk,
                    " from q and k, got ", v.sizes());
  TORCH_CHECK_VALUE(std::isfinite(scaling), op, ": scaling must be finite, got ", scaling);
  c.mask = checked_attention_mask(op, mask, {c.b, c.h, c.lq, c.lk});
  c.dtype = compute_dtype({q, k, v});
  c.q = as_contiguous(q, c.dtype);
  c.k = as_contiguous(k, c.dtype);
  c.v = as_contiguous(v, c.dtype);
  return c;
}

template <typename T>
spatten::AttentionHeadInputsT<T> head_inputs(const AttentionCall& c, int64_t bh) {
  const int64_t bi = bh / c.h, hi = bh % c.h;
  spatten::AttentionHeadInputsT<T> in{};
  in.q = c.q.data_ptr<T>() + bh * c.lq * c.d;
  in.k = c.k.data_ptr<T>() + bh * c.lk * c.d;
  in.v = c.v.data_ptr<T>() + bh * c.lk * c.dv;
  set_head_mask(in, c.mask, bi, hi);
  in.query_mask = c.query_mask.defined() ? c.query_mask.data_ptr<bool>() + bi * c.lq : nullptr;
  return in;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> attention_with_importance_cpu(const at::Tensor& q, const at::Tensor& k,
                                                                 const at::Tensor& v,
                                                                 const std::optional<at::Tensor>& mask,
                                                                 double scaling,
                                                                 const std::optional<at::Tensor>& query_mask) {
  constexpr const char* op = "spatten.attention_with_importance";
  AttentionCall c = checked_attention(op, q, k, v, mask, scaling);
  if (query_mask.has_value()) c.query_mask = checked_mask(op, "query_mask", *query_mask, {c.b, c.lq});
  at::Tensor out = at::empty({c.b, c.h, c.lq, c.dv}, q.options().dtype(c.dtype));
  at::Tensor importance = at::zeros({c.b, c.lk}, q.options().dtype(at::kFloat));
  if (c.b * c.h == 0) return {out, importance};
  at::Tensor per_head = at::empty({c.b, c.h, c.lk}, q.options().dtype(c.dtype));

  std::atomic<bool> finite{true};
  dispatch_compute(c.dtype, [&](auto zero) {
    using T = decltype(zero);
    const spatten::AttentionParamsT<T> params{c.lq, c.lk, c.d, c.dv, static_cast<T>(scaling),
                                              spatten::default_block_rows(c.lk)};
    T* out_ptr = out.data_ptr<T>();
    T* per_head_ptr = per_head.data_ptr<T>();
    at::parallel_for(0, c.b * c.h, row_grain(c.lq * std::max(c.lk, c.dv)), [&](int64_t begin, int64_t end) {
      spatten::AttentionScratchT<T> scratch;
      for (int64_t bh = begin; bh < end; ++bh)
        if (!spatten::attention_with_importance_head(head_inputs<T>(c, bh), params, out_ptr + bh * c.lq * c.dv,
                                                     per_head_ptr + bh * c.lk, scratch))
          finite = false;
    });
  });
  check_finite_logits(op, finite);

  // Sum over heads in ascending order (in the compute dtype, then rounded once): deterministic whatever the
  // thread count.
  at::Tensor total = per_head.select(1, 0).clone();
  for (int64_t hi = 1; hi < c.h; ++hi) total.add_(per_head.select(1, hi));
  importance.copy_(total);
  return {out, importance};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cpu(const at::Tensor& grad_out,
                                                                      const at::Tensor& q, const at::Tensor& k,
                                                                      const at::Tensor& v,
                                                                      const std::optional<at::Tensor>& mask,
                                                                      double scaling) {
  constexpr const char* op = "spatten.attention_backward";
  const AttentionCall c = checked_attention(op, q, k, v, mask, scaling);
  check_shape(op, "grad_out", grad_out, {c.b, c.h, c.lq, c.dv});
  const at::Tensor go = as_contiguous(grad_out, c.dtype);
  const auto opts = q.options().dtype(c.dtype);
  at::Tensor grad_q = at::empty({c.b, c.h, c.lq, c.d}, opts);
  at::Tensor grad_k = at::empty({c.b, c.h, c.lk, c.d}, opts);
  at::Tensor grad_v = at::empty({c.b, c.h, c.lk, c.dv}, opts);
  if (c.b * c.h == 0) return {grad_q, grad_k, grad_v};

  std::atomic<bool> finite{true};
  dispatch_compute(c.dtype, [&](auto zero) {
    using T = decltype(zero);
    const spatten::AttentionParamsT<T> params{c.lq, c.lk, c.d, c.dv, static_cast<T>(scaling), c.lq};
    const spatten::AttentionGradShape shape{c.lq, c.lk, c.d, c.dv};
    at::parallel_for(0, c.b * c.h, row_grain(c.lq * c.lk), [&](int64_t begin, int64_t end) {
      std::vector<T> probs(static_cast<size_t>(c.lq * c.lk)), q_scaled;
      spatten::AttentionGradScratch<T> scratch;
      for (int64_t bh = begin; bh < end; ++bh) {
        const auto in = head_inputs<T>(c, bh);
        if (!spatten::attention_probs_head(in, params, probs.data(), q_scaled)) {
          finite = false;
          continue;
        }
        spatten::AttentionGradInputs<T> g{};
        g.q = in.q;
        g.keys = in.k;
        g.v = in.v;
        g.probs = probs.data();
        g.grad_out = go.data_ptr<T>() + bh * c.lq * c.dv;
        spatten::attention_backward_head(g, shape, static_cast<T>(scaling), grad_q.data_ptr<T>() + bh * c.lq * c.d,
                                         grad_k.data_ptr<T>() + bh * c.lk * c.d,
                                         grad_v.data_ptr<T>() + bh * c.lk * c.dv, scratch);
      }
    });
  });
  check_finite_logits(op, finite);
  return {grad_q, grad_k, grad_v};
}

}  // namespace spatten::torch_ops
