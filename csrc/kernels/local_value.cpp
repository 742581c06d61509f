#include "kernels/local_value.h"

#include <Eigen/Core>
#include <algorithm>

namespace spatten {

int64_t local_value_attention_head(const float* probs, const float* v, int64_t lq, int64_t lk, int64_t d,
                                   int64_t k, float* out, int64_t* kept, LocalValueScratch& scratch) {
  scratch.used.assign(static_cast<size_t>(lk), 0);
  for (int64_t i = 0; i < lq; ++i) {
    const float* row = probs + i * lk;
    int64_t* row_kept = kept + i * k;
    if (!topk_indices_row(row, lk, k, row_kept, scratch.topk)) return -1;
    Eigen::Map<Eigen::ArrayXf> out_row(out + i * d, d);
    out_row.setZero();
    for (int64_t t = 0; t < k; ++t) {
      const int64_t j = row_kept[t];
      out_row += row[j] * Eigen::Map<const Eigen::ArrayXf>(v + j * d, d);
      scratch.used[static_cast<size_t>(j)] = 1;
    }
  }
  return std::count(scratch.used.begin(), scratch.used.end(), uint8_t{1});
}

}  // namespace spatten
