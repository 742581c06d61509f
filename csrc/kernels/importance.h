#pragma once
// Cascade token and head importance (SpAtten section III-A/B): sums of attention probabilities per key and of
// |attention output| per head. Torch-free; masks are bool arrays with True = real token, nullptr = all valid.
#include <cstdint>

namespace spatten {

// One batch element, key columns [col_begin, col_end):
//   out[j] = (accumulator ? accumulator[j] : 0) + sum_{h, valid i} probs[h, i, j]   for a valid key j, else
//   out[j] = accumulator[j] (or 0).
// probs: [heads, lq, lk] row-major; query_mask: [lq]; key_mask, accumulator, out: [lk].
void token_importance_columns(const float* probs, int64_t heads, int64_t lq, int64_t lk, const bool* query_mask,
                              const bool* key_mask, const float* accumulator, int64_t col_begin, int64_t col_end,
                              float* out);

// One (batch, head): sum over valid rows i and all d of |attn_out[i, d]|. attn_out: [lq, d]; query_mask: [lq].
float head_importance_head(const float* attn_out, int64_t lq, int64_t d, const bool* query_mask);

}  // namespace spatten
