// ATen adapters for local value pruning and its backward. float64 inputs run the double kernels (gradcheck);
// everything else computes in float32.
#include <ATen/Parallel.h>

#include <atomic>

#include "adapters.h"
#include "checks.h"
#include "kernels/local_value.h"

namespace spatten::torch_ops {
namespace {

void check_probs_and_v(const char* op, const at::Tensor& probs, const at::Tensor& v) {
  check_float_4d(op, "probs", probs, "[B, H, Lq, Lk]");
  check_float_4d(op, "v", v, "[B, H, Lk, D]");
  const int64_t b = probs.size(0), h = probs.size(1), lk = probs.size(3);
  TORCH_CHECK_VALUE(v.size(0) == b && v.size(1) == h && v.size(2) == lk, op,
                    ": v must have shape [B, H, Lk, D] with B, H, Lk = ", b, ", ", h, ", ", lk, " from probs, got ",
                    v.sizes());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> local_value_attention_cpu(const at::Tensor& probs,
                                                                         const at::Tensor& v, int64_t k) {
  constexpr const char* op = "spatten.local_value_attention";
  check_probs_and_v(op, probs, v);
  const int64_t b = probs.size(0), h = probs.size(1), lq = probs.size(2), lk = probs.size(3), d = v.size(3);
  TORCH_CHECK_VALUE(k >= 0 && k <= lk, op, ": k must be in [0, ", lk, "] (Lk), got ", k);
  const at::ScalarType dtype = compute_dtype({probs, v});
  const at::Tensor p = as_contiguous(probs, dtype);
  const at::Tensor vc = as_contiguous(v, dtype);
  const auto opts = probs.options().dtype(dtype);
  at::Tensor out = at::empty({b, h, lq, d}, opts);
  at::Tensor kept = at::empty({b, h, lq, k}, opts.dtype(at::kLong));
  at::Tensor fetched = at::empty({b, h}, opts.dtype(at::kLong));

  int64_t* kept_ptr = kept.data_ptr<int64_t>();
  int64_t* fetched_ptr = fetched.data_ptr<int64_t>();
  std::atomic<bool> nan_seen{false};
  dispatch_compute(dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* p_ptr = p.data_ptr<T>();
    const T* v_ptr = vc.data_ptr<T>();
    T* out_ptr = out.data_ptr<T>();
    at::parallel_for(0, b * h, row_grain(lq * lk), [&](int64_t begin, int64_t end) {
      spatten::LocalValueScratch scratch;
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t n = spatten::local_value_attention_head(p_ptr + bh * lq * lk, v_ptr + bh * lk * d, lq, lk, d,
                                                              k, out_ptr + bh * lq * d, kept_ptr + bh * lq * k,
                                                              scratch);
        if (n < 0) nan_seen = true;
        fetched_ptr[bh] = n;
      }
    });
  });
  TORCH_CHECK_VALUE(!nan_seen, op, ": probs contain NaN");
  return {out, kept, fetched};
}

std::tuple<at::Tensor, at::Tensor> local_value_attention_backward_cpu(const at::Tensor& grad_out,
                                                                      const at::Tensor& probs, const at::Tensor& v,
                                                                      const at::Tensor& kept) {
  constexpr const char* op = "spatten.local_value_attention_backward";
  check_probs_and_v(op, probs, v);
  const int64_t b = probs.size(0), h = probs.size(1), lq = probs.size(2), lk = probs.size(3), d = v.size(3);
  check_dtype(op, "kept", kept, at::kLong);
  check_dim(op, "kept", kept, 4, "[B, H, Lq, k]");
  const int64_t k = kept.size(3);
  check_shape(op, "kept", kept, {b, h, lq, k});
  TORCH_CHECK_VALUE(k <= lk, op, ": kept holds ", k, " positions per row for Lk = ", lk);
  check_shape(op, "grad_out", grad_out, {b, h, lq, d});
  const at::ScalarType dtype = compute_dtype({probs, v, grad_out});
  const at::Tensor p = as_contiguous(probs, dtype);
  const at::Tensor vc = as_contiguous(v, dtype);
  const at::Tensor go = as_contiguous(grad_out, dtype);
  const at::Tensor kc = kept.contiguous();
  if (k > 0) {
    TORCH_CHECK_VALUE(kc.min().item<int64_t>() >= 0 && kc.max().item<int64_t>() < lk, op,
                      ": kept positions must be in [0, ", lk, ")");
  }
  const auto opts = probs.options().dtype(dtype);
  at::Tensor grad_probs = at::empty({b, h, lq, lk}, opts);
  at::Tensor grad_v = at::empty({b, h, lk, d}, opts);
  dispatch_compute(dtype, [&](auto zero) {
    using T = decltype(zero);
    at::parallel_for(0, b * h, row_grain(lq * lk), [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh)
        spatten::local_value_attention_backward_head(
            p.data_ptr<T>() + bh * lq * lk, vc.data_ptr<T>() + bh * lk * d, kc.data_ptr<int64_t>() + bh * lq * k,
            go.data_ptr<T>() + bh * lq * d, lq, lk, d, k, grad_probs.data_ptr<T>() + bh * lq * lk,
            grad_v.data_ptr<T>() + bh * lk * d);
    });
  });
  return {grad_probs, grad_v};
}

}  // namespace spatten::torch_ops
