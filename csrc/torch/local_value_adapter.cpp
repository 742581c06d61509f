// ATen adapter for local value pruning.
#include <ATen/Parallel.h>

#include <atomic>

#include "adapters.h"
#include "checks.h"
#include "kernels/local_value.h"

namespace spatten::torch_ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> local_value_attention_cpu(const at::Tensor& probs,
                                                                         const at::Tensor& v, int64_t k) {
  constexpr const char* op = "spatten.local_value_attention";
  check_float_4d(op, "probs", probs, "[B, H, Lq, Lk]");
  check_float_4d(op, "v", v, "[B, H, Lk, D]");
  const int64_t b = probs.size(0), h = probs.size(1), lq = probs.size(2), lk = probs.size(3), d = v.size(3);
  TORCH_CHECK_VALUE(v.size(0) == b && v.size(1) == h && v.size(2) == lk, op,
                    ": v must have shape [B, H, Lk, D] with B, H, Lk = ", b, ", ", h, ", ", lk, " from probs, got ",
                    v.sizes());
  TORCH_CHECK_VALUE(k >= 0 && k <= lk, op, ": k must be in [0, ", lk, "] (Lk), got ", k);
  const at::Tensor p = as_contiguous_float(probs);
  const at::Tensor vf = as_contiguous_float(v);
  const auto f32 = probs.options().dtype(at::kFloat);
  at::Tensor out = at::empty({b, h, lq, d}, f32);
  at::Tensor kept = at::empty({b, h, lq, k}, f32.dtype(at::kLong));
  at::Tensor fetched = at::empty({b, h}, f32.dtype(at::kLong));

  const float* p_ptr = p.data_ptr<float>();
  const float* v_ptr = vf.data_ptr<float>();
  float* out_ptr = out.data_ptr<float>();
  int64_t* kept_ptr = kept.data_ptr<int64_t>();
  int64_t* fetched_ptr = fetched.data_ptr<int64_t>();
  std::atomic<bool> nan_seen{false};
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
  TORCH_CHECK_VALUE(!nan_seen, op, ": probs contain NaN");
  return {out, kept, fetched};
}

}  // namespace spatten::torch_ops
