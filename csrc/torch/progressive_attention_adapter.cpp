// ATen adapter for progressive-quantization attention: one fused kernel per (batch, head), in parallel.
#include <ATen/Parallel.h>

#include <cmath>

#include "adapters.h"
#include "checks.h"
#include "kernels/progressive_attention.h"

namespace spatten::torch_ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> progressive_attention_cpu(
    const at::Tensor& q, const at::Tensor& k_msb, const at::Tensor& k_lsb, const at::Tensor& k_scale,
    const at::Tensor& v, const std::optional<at::Tensor>& mask, double threshold, int64_t lsb_bits,
    double scaling) {
  constexpr const char* op = "spatten.progressive_attention";
  check_float_4d(op, "q", q, "[B, H, Lq, D]");
  check_float_4d(op, "v", v, "[B, H, Lk, Dv]");
  check_dtype(op, "k_msb", k_msb, at::kShort);
  check_dtype(op, "k_lsb", k_lsb, at::kShort);
  check_cpu(op, "k_msb", k_msb);
  check_cpu(op, "k_lsb", k_lsb);
  const int64_t b = q.size(0), h = q.size(1), lq = q.size(2), d = q.size(3), lk = v.size(2), dv = v.size(3);
  TORCH_CHECK_VALUE(v.size(0) == b && v.size(1) == h, op, ": v must have shape [B, H, Lk, Dv] with B, H = ", b,
                    ", ", h, " from q, got ", v.sizes());
  check_shape(op, "k_msb", k_msb, {b, h, lk, d});
  check_shape(op, "k_lsb", k_lsb, {b, h, lk, d});
  check_lsb_bits(op, lsb_bits);
  TORCH_CHECK_VALUE(!std::isnan(threshold), op, ": threshold is NaN");
  TORCH_CHECK_VALUE(std::isfinite(scaling), op, ": scaling must be finite, got ", scaling);
  int64_t scale_rows = 1;
  const at::Tensor scale_c = checked_scale(op, "k_scale", k_scale, k_msb, &scale_rows);

  const at::Tensor mask_view = checked_attention_mask(op, mask, {b, h, lq, lk});

  const at::Tensor qf = as_contiguous_float(q);
  const at::Tensor vf = as_contiguous_float(v);
  const at::Tensor msb_c = k_msb.contiguous();
  const at::Tensor lsb_c = k_lsb.contiguous();
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor out = at::empty({b, h, lq, dv}, f32);
  at::Tensor probs = at::empty({b, h, lq, lk}, f32);
  at::Tensor refetch = at::empty({b, h, lq}, f32.dtype(at::kBool));
  if (b * h == 0) return {out, probs, refetch};

  const spatten::ProgressiveParams params{lq, lk, d, dv, static_cast<float>(threshold), static_cast<int>(lsb_bits),
                                          static_cast<float>(scaling)};
  const float* q_ptr = qf.data_ptr<float>();
  const float* v_ptr = vf.data_ptr<float>();
  const int16_t* msb_ptr = msb_c.data_ptr<int16_t>();
  const int16_t* lsb_ptr = lsb_c.data_ptr<int16_t>();
  const float* scale_ptr = scale_c.data_ptr<float>();
  const bool* mask_ptr = mask_view.defined() ? mask_view.data_ptr<bool>() : nullptr;
  float* out_ptr = out.data_ptr<float>();
  float* probs_ptr = probs.data_ptr<float>();
  bool* refetch_ptr = refetch.data_ptr<bool>();
  at::parallel_for(0, b * h, row_grain(lq * lk), [&](int64_t begin, int64_t end) {
    spatten::ProgressiveScratch scratch;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t bi = bh / h, hi = bh % h;
      spatten::ProgressiveHeadInputs in{};
      in.q = q_ptr + bh * lq * d;
      in.k_msb = msb_ptr + bh * lk * d;
      in.k_lsb = lsb_ptr + bh * lk * d;
      in.k_scale = scale_ptr + bh * scale_rows;
      in.k_scale_per_token = scale_rows != 1;
      in.v = v_ptr + bh * lk * dv;
      if (mask_ptr) {
        in.mask = mask_ptr + bi * mask_view.stride(0) + hi * mask_view.stride(1);
        in.mask_row_stride = mask_view.stride(2);
        in.mask_col_stride = mask_view.stride(3);
      }
      spatten::progressive_attention_head(in, params, out_ptr + bh * lq * dv, probs_ptr + bh * lq * lk,
                                          refetch_ptr + bh * lq, scratch);
    }
  });
  return {out, probs, refetch};
}

}  // namespace spatten::torch_ops
