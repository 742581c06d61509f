#pragma once
// Input checks shared by the ATen adapters. Each error names the op and the offending argument; value problems
// raise ValueError and dtype problems TypeError in Python (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE).
#include <ATen/ATen.h>

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace spatten::torch_ops {

inline void check_cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
}

inline void check_float(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating dtype (float32/float16/bfloat16), got ", t.scalar_type());
}

inline void check_dtype(const char* op, const char* name, const at::Tensor& t, at::ScalarType want) {
  TORCH_CHECK_TYPE(t.scalar_type() == want, op, ": ", name, " must be ", want, ", got ", t.scalar_type());
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": ", name, " must be ", layout, ", got shape ", t.sizes());
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef want) {
  TORCH_CHECK_VALUE(t.sizes() == want, op, ": ", name, " must have shape ", want, ", got ", t.sizes());
}

// A floating CPU tensor of 4 dims, e.g. layout "[B, H, Lq, Lk]".
inline void check_float_4d(const char* op, const char* name, const at::Tensor& t, const char* layout) {
  check_float(op, name, t);
  check_cpu(op, name, t);
  check_dim(op, name, t, 4, layout);
}

// A bool mask of exactly `want` (True = real token), as a contiguous tensor.
inline at::Tensor checked_mask(const char* op, const char* name, const at::Tensor& mask, at::IntArrayRef want) {
  check_dtype(op, name, mask, at::kBool);
  check_cpu(op, name, mask);
  check_shape(op, name, mask, want);
  return mask.contiguous();
}

// float32 contiguous view of t: no copy when t already is one.
inline at::Tensor as_contiguous_float(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat ? t.contiguous() : t.to(at::kFloat).contiguous();
}

// The dtype the kernels compute in: float64 when any of the (defined) float inputs is float64, else float32
// (float16 and bfloat16 are widened). Outputs are returned in this dtype.
inline at::ScalarType compute_dtype(std::initializer_list<at::Tensor> inputs) {
  for (const at::Tensor& t : inputs)
    if (t.defined() && t.scalar_type() == at::kDouble) return at::kDouble;
  return at::kFloat;
}

// t as a contiguous tensor of `dtype`: no copy when it already is one.
inline at::Tensor as_contiguous(const at::Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype ? t.contiguous() : t.to(dtype).contiguous();
}

// Runs body(T{}) with T = double for float64, else float: the kernels' two instantiations.
template <typename Body>
auto dispatch_compute(at::ScalarType dtype, Body&& body) {
  if (dtype == at::kDouble) return body(double{});
  return body(float{});
}

// Rows per parallel task so that each task touches at least ~32 K elements.
inline int64_t row_grain(int64_t row_length) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(row_length, 1)); }

}  // namespace spatten::torch_ops

namespace spatten::torch_ops {

// True if a tensor of shape `have` broadcasts to `want` (numpy rules, without adding dims to `want`).
inline bool broadcasts_to(at::IntArrayRef have, at::IntArrayRef want) {
  if (have.size() > want.size()) return false;
  const size_t offset = want.size() - have.size();
  for (size_t i = 0; i < have.size(); ++i)
    if (have[i] != 1 && have[i] != want[offset + i]) return false;
  return true;
}

// An optional attention mask: bool, CPU, broadcastable to [B, H, Lq, Lk] = want. Returned as the expanded strided
// view (broadcast dims have stride 0, nothing is copied), or undefined without a mask.
inline at::Tensor checked_attention_mask(const char* op, const std::optional<at::Tensor>& mask, at::IntArrayRef want) {
  if (!mask.has_value()) return {};
  check_dtype(op, "mask", *mask, at::kBool);
  check_cpu(op, "mask", *mask);
  TORCH_CHECK_VALUE(broadcasts_to(mask->sizes(), want), op, ": mask of shape ", mask->sizes(),
                    " does not broadcast to [B, H, Lq, Lk] = ", want);
  return mask->expand(want);
}

// Points a kernel's head inputs (fields mask, mask_row_stride, mask_col_stride) at head (bi, hi) of an expanded
// attention mask view; leaves them null/zero without a mask.
template <typename HeadInputs>
void set_head_mask(HeadInputs& in, const at::Tensor& mask_view, int64_t bi, int64_t hi) {
  if (!mask_view.defined()) return;
  in.mask = mask_view.data_ptr<bool>() + bi * mask_view.stride(0) + hi * mask_view.stride(1);
  in.mask_row_stride = mask_view.stride(2);
  in.mask_col_stride = mask_view.stride(3);
}

// Bits of the LSB part of an MSB/LSB pair (msb_bits >= 1 and b <= 16 leave at most 15).
inline void check_lsb_bits(const char* op, int64_t lsb_bits) {
  TORCH_CHECK_VALUE(lsb_bits >= 0 && lsb_bits <= 15, op, ": lsb_bits must be in [0, 15], got ", lsb_bits);
}

// The quantization scale for msb of shape [..., L, D]: float32 or float64, [..., 1, 1] or [..., L, 1] whose leading
// dims broadcast to msb's. Returned expanded to msb's leading dims and contiguous (same dtype), with Ls (1 or L) in
// *scale_rows.
inline at::Tensor checked_scale(const char* op, const char* name, const at::Tensor& scale, const at::Tensor& msb,
                                int64_t* scale_rows) {
  TORCH_CHECK_TYPE(scale.scalar_type() == at::kFloat || scale.scalar_type() == at::kDouble, op, ": ", name,
                   " must be float32 or float64, got ", scale.scalar_type());
  check_cpu(op, name, scale);
  const int64_t l = msb.size(-2);
  const bool layout_ok = scale.dim() == msb.dim() && scale.size(-1) == 1 &&
                         (scale.size(-2) == 1 || scale.size(-2) == l) &&
                         broadcasts_to(scale.sizes().slice(0, scale.dim() - 2), msb.sizes().slice(0, msb.dim() - 2));
  TORCH_CHECK_VALUE(layout_ok, op, ": ", name, " must be [..., 1, 1] (per head) or [..., L, 1] (per token) for ",
                    "values of shape ", msb.sizes(), ", got ", scale.sizes());
  *scale_rows = scale.size(-2);
  std::vector<int64_t> want(msb.sizes().begin(), msb.sizes().end());
  want[want.size() - 2] = *scale_rows;
  want.back() = 1;
  return scale.expand(want).contiguous();
}

}  // namespace spatten::torch_ops

namespace spatten::torch_ops {

// One documented behaviour for NaN/Inf in attention (docs/ops.md): a NaN or infinite logit on an allowed key
// raises, in the op and in its Python reference alike, instead of propagating or being zeroed.
inline void check_finite_logits(const char* op, bool all_finite) {
  TORCH_CHECK_VALUE(all_finite, op, ": non-finite attention logits (q or k holds NaN or Inf on an allowed key, or ",
                    "scaling * q.k overflows)");
}

}  // namespace spatten::torch_ops
