#pragma once
// Top-k engine of SpAtten: the k-th largest value by quick-select, then an order-preserving filter.
// Torch-free; callers validate inputs (k in [0, n], no NaN).
#include <cstdint>
#include <vector>

namespace spatten {

// Writes the positions of the k largest entries of scores[0, n) into out[0, k), in ascending position
// order. Ties at the k-th value are taken toward the lower position, as the hardware filter does.
// `scratch` is reused across calls to avoid an allocation per row.
void topk_indices_row(const float* scores, int64_t n, int64_t k, int64_t* out, std::vector<float>& scratch);

// Same over `rows` contiguous rows of length n (row-major), out is rows x k.
void topk_indices(const float* scores, int64_t rows, int64_t n, int64_t k, int64_t* out);

// True if any entry of scores[0, count) is NaN.
bool has_nan(const float* scores, int64_t count);

}  // namespace spatten
