#pragma once
// Local value pruning (SpAtten section III-C): per query row only the V rows of the top-k probabilities are
// fetched and used. Torch-free.
#include <cstdint>
#include <vector>

#include "kernels/topk.h"

namespace spatten {

struct LocalValueScratch {
  TopkScratch topk;
  std::vector<uint8_t> used;  // [lk]: V row j is fetched by some query row
};

// One (batch, head). probs: [lq, lk]; v: [lk, d]; k in [0, lk].
// kept[i, :] = topk_indices(probs[i, :], k); out[i, :] = sum_{j in kept[i]} probs[i, j] * v[j, :] (no
// renormalisation). Returns the number of distinct V rows used by any query row, or -1 if probs holds NaN.
int64_t local_value_attention_head(const float* probs, const float* v, int64_t lq, int64_t lk, int64_t d,
                                   int64_t k, float* out, int64_t* kept, LocalValueScratch& scratch);

}  // namespace spatten
