#include "kernels/masked_softmax.h"

#include <Eigen/Core>
#include <limits>

namespace spatten {

float masked_softmax_row(float* row, const bool* mask_row, int64_t mask_col_stride, int64_t lk) {
  Eigen::Map<Eigen::ArrayXf> r(row, lk);
  bool any_allowed = lk > 0;
  if (mask_row) {
    any_allowed = false;
    for (int64_t j = 0; j < lk; ++j) {
      const bool allowed = mask_row[j * mask_col_stride];
      any_allowed |= allowed;
      if (!allowed) row[j] = -std::numeric_limits<float>::infinity();
    }
  }
  if (!any_allowed) {
    r.setZero();
    return -1.0f;
  }
  r = (r - r.maxCoeff()).exp();
  if (mask_row) {
    // A masked key has probability exactly 0, whatever the vectorized exp makes of -inf.
    for (int64_t j = 0; j < lk; ++j)
      if (!mask_row[j * mask_col_stride]) row[j] = 0.0f;
  }
  r /= r.sum();
  return r.maxCoeff();
}

}  // namespace spatten
