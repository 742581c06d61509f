#include "kernels/importance.h"

#include <Eigen/Core>
#include <vector>

namespace spatten {

void token_importance_columns(const float* probs, int64_t heads, int64_t lq, int64_t lk, const bool* query_mask,
                              const bool* key_mask, const float* accumulator, int64_t col_begin, int64_t col_end,
                              float* out) {
  const int64_t width = col_end - col_begin;
  if (width <= 0) return;
  // Column sums of the valid rows, accumulated row by row so the inner loop runs over contiguous keys.
  Eigen::Map<Eigen::ArrayXf> sums(out + col_begin, width);
  sums.setZero();
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < lq; ++i) {
      if (query_mask && !query_mask[i]) continue;  // masked rows are never read: they may hold padding garbage
      sums += Eigen::Map<const Eigen::ArrayXf>(probs + (h * lq + i) * lk + col_begin, width);
    }
  }
  for (int64_t j = col_begin; j < col_end; ++j) {
    const float contribution = (key_mask && !key_mask[j]) ? 0.0f : out[j];
    out[j] = accumulator ? accumulator[j] + contribution : contribution;
  }
}

float head_importance_head(const float* attn_out, int64_t lq, int64_t d, const bool* query_mask) {
  float total = 0.0f;
  for (int64_t i = 0; i < lq; ++i) {
    if (query_mask && !query_mask[i]) continue;
    total += Eigen::Map<const Eigen::ArrayXf>(attn_out + i * d, d).abs().sum();
  }
  return total;
}

}  // namespace spatten
