#pragma once
// CUDA top-k engine: radix-select of the k-th largest value, then an order-preserving filter (block scan), one
// thread block per row. Torch-free; the adapter validates inputs (k in [0, n], no NaN).
#include <cuda_runtime.h>

#include <cstdint>

namespace spatten::cuda {

// scores: rows x n row-major float32 on the device; out: rows x k int64, positions in ascending order, ties at
// the k-th value taken toward the lower position (same contract as the CPU kernel).
cudaError_t topk_indices(const float* scores, int64_t rows, int64_t n, int64_t k, int64_t* out,
                         cudaStream_t stream);

}  // namespace spatten::cuda
