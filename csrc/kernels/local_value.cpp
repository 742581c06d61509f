#include "kernels/local_value.h"

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>

namespace spatten {

template <typename T>
int64_t local_value_attention_head(const T* probs, const T* v, int64_t lq, int64_t lk, int64_t d, int64_t k,
                                   T* out, int64_t* kept, LocalValueScratch& scratch) {
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  scratch.used.assign(static_cast<size_t>(lk), 0);
  for (int64_t i = 0; i < lq; ++i) {
    const T* row = probs + i * lk;
    int64_t* row_kept = kept + i * k;
    const float* selection_row;
    if constexpr (std::is_same_v<T, float>) {
      selection_row = row;
    } else {
      scratch.row_float.assign(row, row + lk);
      selection_row = scratch.row_float.data();
    }
    if (!topk_indices_row(selection_row, lk, k, row_kept, scratch.topk)) return -1;
    Eigen::Map<Array> out_row(out + i * d, d);
    out_row.setZero();
    for (int64_t t = 0; t < k; ++t) {
      const int64_t j = row_kept[t];
      out_row += row[j] * Eigen::Map<const Array>(v + j * d, d);
      scratch.used[static_cast<size_t>(j)] = 1;
    }
  }
  return std::count(scratch.used.begin(), scratch.used.end(), uint8_t{1});
}

template <typename T>
void local_value_attention_backward_head(const T* probs, const T* v, const int64_t* kept, const T* grad_out,
                                         int64_t lq, int64_t lk, int64_t d, int64_t k, T* grad_probs, T* grad_v) {
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  std::fill_n(grad_probs, lq * lk, T(0));
  std::fill_n(grad_v, lk * d, T(0));
  for (int64_t i = 0; i < lq; ++i) {
    Eigen::Map<const Array> g(grad_out + i * d, d);
    for (int64_t t = 0; t < k; ++t) {
      const int64_t j = kept[i * k + t];
      grad_probs[i * lk + j] = (g * Eigen::Map<const Array>(v + j * d, d)).sum();
      Eigen::Map<Array>(grad_v + j * d, d) += probs[i * lk + j] * g;
    }
  }
}

#define SPATTEN_INSTANTIATE(T)                                                                                  \
  template int64_t local_value_attention_head<T>(const T*, const T*, int64_t, int64_t, int64_t, int64_t, T*,   \
                                                 int64_t*, LocalValueScratch&);                                \
  template void local_value_attention_backward_head<T>(const T*, const T*, const int64_t*, const T*, int64_t,  \
                                                       int64_t, int64_t, int64_t, T*, T*);
SPATTEN_INSTANTIATE(float)
SPATTEN_INSTANTIATE(double)
#undef SPATTEN_INSTANTIATE

}  // namespace spatten
