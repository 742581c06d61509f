// ATen adapter for attention fused with token importance: one kernel call per (batch, head), in parallel; the
// per-head importance goes to a [B, H, Lk] scratch that is summed over heads afterwards in a fixed order.
#include <ATen/Parallel.h>

#include <cmath>

#include "adapters.h"
#include "checks.h"
#include "kernels/attention_importance.h"

namespace spatten::torch_ops {

std::tuple<at::Tensor, at::Tensor> attention_with_importance_cpu(const at::Tensor& q, const at::Tensor& k,
                                                                 const at::Tensor& v,
                                                                 const std::optional<at::Tensor>& mask,
                                                                 double scaling,
                                                                 const std::optional<at::Tensor>& query_mask) {
  constexpr const char* op = "spatten.attention_with_importance";
  check_float_4d(op, "q", q, "[B, H, Lq, D]");
  check_float_4d(op, "k", k, "[B, H, Lk, D]");
  check_float_4d(op, "v", v, "[B, H, Lk, Dv]");
  const int64_t b = q.size(0), h = q.size(1), lq = q.size(2), d = q.size(3), lk = k.size(2), dv = v.size(3);
  TORCH_CHECK_VALUE(k.size(0) == b && k.size(1) == h && k.size(3) == d, op,
                    ": k must have shape [B, H, Lk, D] with B, H, D = ", b, ", ", h, ", ", d, " from q, got ",
                    k.sizes());
  TORCH_CHECK_VALUE(v.size(0) == b && v.size(1) == h && v.size(2) == lk, op,
                    ": v must have shape [B, H, Lk, Dv] with B, H, Lk = ", b, ", ", h, ", ", lk, " from q and k, got ",
                    v.sizes());
  TORCH_CHECK_VALUE(std::isfinite(scaling), op, ": scaling must be finite, got ", scaling);

  const at::Tensor mask_view = checked_attention_mask(op, mask, {b, h, lq, lk});
  at::Tensor query_mask_c;
  if (query_mask.has_value()) query_mask_c = checked_mask(op, "query_mask", *query_mask, {b, lq});

  const at::Tensor qf = as_contiguous_float(q);
  const at::Tensor kf = as_contiguous_float(k);
  const at::Tensor vf = as_contiguous_float(v);
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor out = at::empty({b, h, lq, dv}, f32);
  at::Tensor importance = at::zeros({b, lk}, f32);
  if (b * h == 0) return {out, importance};
  at::Tensor per_head = at::empty({b, h, lk}, f32);

  const int64_t block_rows = spatten::default_block_rows(lk);
  const spatten::AttentionParams params{lq, lk, d, dv, static_cast<float>(scaling), block_rows};
  const float* q_ptr = qf.data_ptr<float>();
  const float* k_ptr = kf.data_ptr<float>();
  const float* v_ptr = vf.data_ptr<float>();
  const bool* mask_ptr = mask_view.defined() ? mask_view.data_ptr<bool>() : nullptr;
  const bool* qmask_ptr = query_mask_c.defined() ? query_mask_c.data_ptr<bool>() : nullptr;
  float* out_ptr = out.data_ptr<float>();
  float* per_head_ptr = per_head.data_ptr<float>();
  at::parallel_for(0, b * h, row_grain(lq * std::max(lk, dv)), [&](int64_t begin, int64_t end) {
    spatten::AttentionScratch scratch;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t bi = bh / h, hi = bh % h;
      spatten::AttentionHeadInputs in{};
      in.q = q_ptr + bh * lq * d;
      in.k = k_ptr + bh * lk * d;
      in.v = v_ptr + bh * lk * dv;
      if (mask_ptr) {
        in.mask = mask_ptr + bi * mask_view.stride(0) + hi * mask_view.stride(1);
        in.mask_row_stride = mask_view.stride(2);
        in.mask_col_stride = mask_view.stride(3);
      }
      in.query_mask = qmask_ptr ? qmask_ptr + bi * lq : nullptr;
      spatten::attention_with_importance_head(in, params, out_ptr + bh * lq * dv, per_head_ptr + bh * lk, scratch);
    }
  });

  // Sum over heads in ascending order: deterministic whatever the thread count.
  float* imp_ptr = importance.data_ptr<float>();
  at::parallel_for(0, b, std::max<int64_t>(1, 32768 / std::max<int64_t>(h * lk, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t bi = begin; bi < end; ++bi) {
      float* dst = imp_ptr + bi * lk;
      for (int64_t hi = 0; hi < h; ++hi) {
        const float* src = per_head_ptr + (bi * h + hi) * lk;
        for (int64_t j = 0; j < lk; ++j) dst[j] += src[j];
      }
    }
  });
  return {out, importance};
}

}  // namespace spatten::torch_ops
