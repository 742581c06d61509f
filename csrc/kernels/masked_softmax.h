#pragma once
// In-place masked softmax of one row of logits, shared by the attention kernels. Torch-free; instantiated for
// float and double.
#include <cstdint>

namespace spatten {

// Softmax of row[0..lk) over the allowed keys (vectorized through Eigen arrays). mask_row: element j at
// mask_row[j * mask_col_stride] (True = may attend), or null = all allowed. A masked key gets probability exactly
// 0. Returns the row's max probability; -1 when no key is allowed (the row is then all zeros); NaN when an
// allowed logit is NaN or +-inf (the row is then unspecified: callers report it, see docs/ops.md).
template <typename T>
T masked_softmax_row(T* row, const bool* mask_row, int64_t mask_col_stride, int64_t lk);

}  // namespace spatten
