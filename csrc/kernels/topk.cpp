#include "kernels/topk.h"

#include <algorithm>
#include <cmath>

namespace spatten {

void topk_indices_row(const float* scores, int64_t n, int64_t k, int64_t* out, std::vector<float>& scratch) {
  if (k <= 0) return;
  if (k >= n) {
    for (int64_t i = 0; i < n; ++i) out[i] = i;
    return;
  }
  // Quick-select the k-th largest value (what the engine's comparator array iterates on).
  scratch.assign(scores, scores + n);
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<float>());
  const float kth = scratch[k - 1];
  // Entries strictly above the threshold are all kept; ties fill the remaining slots in position order.
  int64_t above = 0;
  for (int64_t i = 0; i < n; ++i) above += scores[i] > kth;
  int64_t ties_left = k - above;
  int64_t written = 0;
  for (int64_t i = 0; i < n && written < k; ++i) {
    const float s = scores[i];
    if (s > kth || (s == kth && ties_left-- > 0)) out[written++] = i;
  }
}

void topk_indices(const float* scores, int64_t rows, int64_t n, int64_t k, int64_t* out) {
  std::vector<float> scratch;
  for (int64_t r = 0; r < rows; ++r) topk_indices_row(scores + r * n, n, k, out + r * k, scratch);
}

bool has_nan(const float* scores, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (std::isnan(scores[i])) return true;
  return false;
}

}  // namespace spatten
