#pragma once
// Local value pruning (SpAtten section III-C): per query row only the V rows of the top-k probabilities are
// fetched and used. Torch-free; T is float or double.
#include <cstdint>
#include <vector>

#include "kernels/topk.h"

namespace spatten {

struct LocalValueScratch {
  TopkScratch topk;
  std::vector<uint8_t> used;     // [lk]: V row j is fetched by some query row
  std::vector<float> row_float;  // [lk]: a double row rounded to float, the precision top-k selects in
};

// One (batch, head). probs: [lq, lk]; v: [lk, d]; k in [0, lk].
// kept[i, :] = topk_indices(float(probs[i, :]), k); out[i, :] = sum_{j in kept[i]} probs[i, j] * v[j, :] (no
// renormalisation). Returns the number of distinct V rows used by any query row, or -1 if probs holds NaN.
template <typename T>
int64_t local_value_attention_head(const T* probs, const T* v, int64_t lq, int64_t lk, int64_t d, int64_t k,
                                   T* out, int64_t* kept, LocalValueScratch& scratch);

// Backward of local_value_attention_head with the kept positions held fixed (selection is piecewise constant):
//   grad_probs[i, j] = grad_out[i, :] · v[j, :] for j in kept[i], else 0;
//   grad_v[j, :] = sum_{i : j in kept[i]} probs[i, j] * grad_out[i, :].
// probs, grad_probs: [lq, lk]; v, grad_v: [lk, d]; grad_out: [lq, d]; kept: [lq, k]. Rows are summed in order.
template <typename T>
void local_value_attention_backward_head(const T* probs, const T* v, const int64_t* kept, const T* grad_out,
                                         int64_t lq, int64_t lk, int64_t d, int64_t k, T* grad_probs, T* grad_v);

}  // namespace spatten
