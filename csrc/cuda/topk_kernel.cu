#include <cub/block/block_scan.cuh>

#include "topk_kernel.cuh"

namespace spatten::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRadixBits = 8;
constexpr int kBuckets = 1 << kRadixBits;

// Order-preserving map float -> uint32: a larger float gives a larger key. -0.0 maps like +0.0 so that the
// two compare equal, as they do on the CPU.
__device__ __forceinline__ uint32_t OrderedKey(float x) {
  uint32_t bits = __float_as_uint(x);
  if (bits == 0x80000000u) bits = 0;
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__global__ void TopkRowsKernel(const float* __restrict__ scores, int64_t n, int64_t k, int64_t* __restrict__ out) {
  using BlockScan = cub::BlockScan<int, kThreads>;
  __shared__ typename BlockScan::TempStorage scan_storage;
  __shared__ int histogram[kBuckets];
  __shared__ uint32_t shared_digit;
  __shared__ int shared_remaining;

  const float* row = scores + blockIdx.x * n;
  int64_t* row_out = out + blockIdx.x * k;

  // Radix select: fix the k-th largest key 8 bits at a time, from the most significant digit down.
  uint32_t prefix = 0, prefix_mask = 0;
  int remaining = static_cast<int>(k);  // rank of the k-th largest among keys matching the prefix
  for (int shift = 32 - kRadixBits; shift >= 0; shift -= kRadixBits) {
    for (int b = threadIdx.x; b < kBuckets; b += blockDim.x) histogram[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const uint32_t key = OrderedKey(row[i]);
      if ((key & prefix_mask) == prefix) atomicAdd(&histogram[(key >> shift) & (kBuckets - 1)], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int above = 0;
      int digit = kBuckets - 1;
      for (; digit > 0; --digit) {
        if (above + histogram[digit] >= remaining) break;
        above += histogram[digit];
      }
      shared_digit = static_cast<uint32_t>(digit);
      shared_remaining = remaining - above;
    }
    __syncthreads();
    prefix |= shared_digit << shift;
    prefix_mask |= static_cast<uint32_t>(kBuckets - 1) << shift;
    remaining = shared_remaining;
    __syncthreads();
  }
  const uint32_t kth = prefix;
  const int ties_to_take = remaining;  // how many entries equal to the k-th value are kept

  // Order-preserving filter: a chunk of blockDim positions at a time, two block scans give each kept
  // position its tie rank and its output slot.
  int written = 0, ties_seen = 0;
  for (int64_t base = 0; base < n && written < k; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    const uint32_t key = i < n ? OrderedKey(row[i]) : 0;
    const int is_tie = (i < n && key == kth) ? 1 : 0;
    int tie_rank, chunk_ties;
    BlockScan(scan_storage).ExclusiveSum(is_tie, tie_rank, chunk_ties);
    __syncthreads();
    const int take = (i < n && (key > kth || (is_tie && ties_seen + tie_rank < ties_to_take))) ? 1 : 0;
    int slot, chunk_taken;
    BlockScan(scan_storage).ExclusiveSum(take, slot, chunk_taken);
    __syncthreads();
    if (take) row_out[written + slot] = i;
    written += chunk_taken;
    ties_seen += chunk_ties;
  }
}

}  // namespace

cudaError_t topk_indices(const float* scores, int64_t rows, int64_t n, int64_t k, int64_t* out,
                         cudaStream_t stream) {
  if (rows == 0 || k == 0) return cudaSuccess;
  TopkRowsKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(scores, n, k, out);
  return cudaGetLastError();
}

}  // namespace spatten::cuda
