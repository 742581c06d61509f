#pragma once
// Top-k engine of SpAtten: the k-th largest value by selection, then an order-preserving filter.
// Torch-free; callers validate k in [0, n]. NaN is detected inside the row pass and reported, not checked by a
// separate sweep over the input.
#include <cstdint>
#include <vector>

namespace spatten {

// Scratch reused across rows so that a row costs no allocation.
struct TopkScratch {
  std::vector<uint32_t> keys;
  std::vector<uint32_t> candidates;
};

// Writes the positions of the k largest entries of scores[0, n) into out[0, k), in ascending position order.
// Ties at the k-th value are taken toward the lower position, as the hardware filter does; -0 equals +0.
// Returns false (and leaves out unspecified) if the row holds a NaN. The whole row is checked even when k is 0
// or n, so the NaN error does not depend on k.
bool topk_indices_row(const float* scores, int64_t n, int64_t k, int64_t* out, TopkScratch& scratch);

// Same over `rows` contiguous rows of length n (row-major); out is rows x k. Returns false if any row holds NaN.
bool topk_indices(const float* scores, int64_t rows, int64_t n, int64_t k, int64_t* out);

// True if any entry of scores[0, count) is NaN.
bool has_nan(const float* scores, int64_t count);

}  // namespace spatten
