#include "kernels/attention_importance.h"

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>

#include "kernels/masked_softmax.h"

namespace spatten {
namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMajor>;
using Map = Eigen::Map<RowMajor>;

// Eigen's vectorized row reductions (max, sum in the softmax) peel unaligned leading elements, so their summation
// order follows the address. The scratch is therefore used from a 64-byte boundary: every row then has the same
// alignment whichever thread's buffer it lives in, and results do not depend on the thread count.
constexpr size_t kAlignFloats = 16;

float* aligned(std::vector<float>& buffer, size_t floats) {
  buffer.resize(floats + kAlignFloats);
  const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
  const size_t skip = ((64 - address % 64) % 64) / sizeof(float);
  return buffer.data() + skip;
}

}  // namespace

int64_t default_block_rows(int64_t lk) {
  constexpr int64_t kBlockFloats = 64 * 1024;  // 256 KiB of logits
  return std::clamp<int64_t>(kBlockFloats / std::max<int64_t>(lk, 1), 16, 64);
}

void attention_with_importance_head(const AttentionHeadInputs& in, const AttentionParams& p, float* out,
                                    float* importance, AttentionScratch& scratch) {
  const int64_t lq = p.lq, lk = p.lk, d = p.d, dv = p.dv;
  const int64_t block = std::max<int64_t>(1, std::min(p.block_rows, lq));
  float* q_block = aligned(scratch.q_block, static_cast<size_t>(block * d));
  float* logits_block = aligned(scratch.logits, static_cast<size_t>(block * lk));
  ConstMap keys(in.k, lk, d);
  ConstMap values(in.v, lk, dv);
  Eigen::Map<Eigen::ArrayXf> imp(importance, lk);
  imp.setZero();

  for (int64_t start = 0; start < lq; start += block) {
    const int64_t rows = std::min(block, lq - start);
    Map qb(q_block, rows, d);
    qb = ConstMap(in.q + start * d, rows, d) * p.scaling;  // scaling folded into q, not the [rows, lk] logits
    Map logits(logits_block, rows, lk);
    logits.noalias() = qb * keys.transpose();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = start + r;
      float* row = logits_block + r * lk;
      const bool* mask_row = in.mask ? in.mask + i * in.mask_row_stride : nullptr;
      masked_softmax_row(row, mask_row, in.mask_col_stride, lk);
      if (!in.query_mask || in.query_mask[i]) imp += Eigen::Map<const Eigen::ArrayXf>(row, lk);
    }
    Map(out + start * dv, rows, dv).noalias() = logits * values;
  }
}

}  // namespace spatten
