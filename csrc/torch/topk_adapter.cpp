// ATen adapter for the top-k engine: validates tensors, then runs the torch-free kernel over rows in parallel.
#include <ATen/Parallel.h>

#include <atomic>

#include "adapters.h"
#include "checks.h"
#include "kernels/topk.h"

namespace spatten::torch_ops {

at::Tensor topk_indices_cpu(const at::Tensor& scores, int64_t k) {
  constexpr const char* op = "spatten.topk_indices";
  TORCH_CHECK_VALUE(scores.dim() >= 1, op, ": scores must have at least 1 dimension, got a scalar");
  check_float(op, "scores", scores);
  check_cpu(op, "scores", scores);
  const int64_t n = scores.size(-1);
  TORCH_CHECK_VALUE(k >= 0 && k <= n, op, ": k must be in [0, ", n, "] (the last dim), got ", k);
  // A contiguous float32 input is read in place; anything else is converted once.
  const at::Tensor rows_f32 = as_contiguous_float(scores);

  auto out_sizes = scores.sizes().vec();
  out_sizes.back() = k;
  at::Tensor out = at::empty(out_sizes, scores.options().dtype(at::kLong));
  const int64_t rows = n == 0 ? 0 : rows_f32.numel() / n;
  if (rows == 0) return out;
  const float* src = rows_f32.data_ptr<float>();
  int64_t* dst = out.data_ptr<int64_t>();
  std::atomic<bool> nan_seen{false};
  at::parallel_for(0, rows, row_grain(n), [&](int64_t begin, int64_t end) {
    if (!spatten::topk_indices(src + begin * n, end - begin, n, k, dst + begin * k)) nan_seen = true;
  });
  TORCH_CHECK_VALUE(!nan_seen, op, ": scores contain NaN");
  return out;
}

}  // namespace spatten::torch_ops
