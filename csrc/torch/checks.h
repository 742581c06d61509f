#pragma once
// Input checks shared by the ATen adapters. Each error names the op and the offending argument; value problems
// raise ValueError and dtype problems TypeError in Python (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE).
#include <ATen/ATen.h>

#include <algorithm>
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

// Rows per parallel task so that each task touches at least ~32 K elements.
inline int64_t row_grain(int64_t row_length) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(row_length, 1)); }

}  // namespace spatten::torch_ops
