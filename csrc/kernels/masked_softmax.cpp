#include "kernels/masked_softmax.h"

#include <Eigen/Core>
#include <cmath>
#include <limits>

namespace spatten {

template <typename T>
T masked_softmax_row(T* row, const bool* mask_row, int64_t mask_col_stride, int64_t lk) {
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  Eigen::Map<Array> r(row, lk);
  bool any_allowed = lk > 0;
  bool finite = true;
  if (mask_row) {
    any_allowed = false;
    for (int64_t j = 0; j < lk; ++j) {
      const bool allowed = mask_row[j * mask_col_stride];
      any_allowed |= allowed;
      if (!allowed) row[j] = -std::numeric_limits<T>::infinity();
      else finite &= std::isfinite(row[j]);
    }
  } else {
    finite = r.isFinite().all();
  }
  if (!any_allowed) {
    r.setZero();
    return T(-1);
  }
  if (!finite) return std::numeric_limits<T>::quiet_NaN();
  r = (r - r.maxCoeff()).exp();
  if (mask_row) {
    // A masked key has probability exactly 0, whatever the vectorized exp makes of -inf.
    for (int64_t j = 0; j < lk; ++j)
      if (!mask_row[j * mask_col_stride]) row[j] = T(0);
  }
  r /= r.sum();
  return r.maxCoeff();
}

template float masked_softmax_row<float>(float*, const bool*, int64_t, int64_t);
template double masked_softmax_row<double>(double*, const bool*, int64_t, int64_t);

}  // namespace spatten
