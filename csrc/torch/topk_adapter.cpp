// ATen adapter for the top-k engine: validates tensors, then runs the torch-free kernel over rows in parallel.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "kernels/topk.h"
#include "adapters.h"

namespace spatten::torch_ops {

at::Tensor topk_indices_cpu(const at::Tensor& scores, int64_t k) {
  TORCH_CHECK(scores.dim() >= 1, "spatten.topk_indices: scores must have at least 1 dimension, got a scalar");
  TORCH_CHECK(at::isFloatingType(scores.scalar_type()),
              "spatten.topk_indices: scores must be a floating dtype, got ", scores.scalar_type());
  const int64_t n = scores.size(-1);
  TORCH_CHECK(k >= 0 && k <= n, "spatten.topk_indices: k must be in [0, ", n, "] (the last dim), got ", k);
  const at::Tensor rows_f32 = scores.to(at::kFloat).contiguous();
  TORCH_CHECK(!rows_f32.isnan().any().item<bool>(), "spatten.topk_indices: scores contain NaN");

  auto out_sizes = scores.sizes().vec();
  out_sizes.back() = k;
  at::Tensor out = at::empty(out_sizes, scores.options().dtype(at::kLong));
  const int64_t rows = n == 0 ? 0 : rows_f32.numel() / n;
  if (rows == 0 || k == 0) return out;
  const float* src = rows_f32.data_ptr<float>();
  int64_t* dst = out.data_ptr<int64_t>();
  at::parallel_for(0, rows, /*grain_size=*/std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1)),
                   [&](int64_t begin, int64_t end) {
                     spatten::topk_indices(src + begin * n, end - begin, n, k, dst + begin * k);
                   });
  return out;
}

}  // namespace spatten::torch_ops
