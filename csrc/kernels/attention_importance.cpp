#include "kernels/attention_importance.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/masked_softmax.h"

namespace spatten {
namespace {

template <typename T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Eigen's vectorized row reductions (max, sum in the softmax) peel unaligned leading elements, so their summation
// order follows the address. The scratch is therefore used from a 64-byte boundary: every row then has the same
// alignment whichever thread's buffer it lives in, and results do not depend on the thread count.
constexpr size_t kAlignBytes = 64;

template <typename T>
T* aligned(std::vector<T>& buffer, size_t count) {
  buffer.resize(count + kAlignBytes / sizeof(T));
  const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
  const size_t skip = ((kAlignBytes - address % kAlignBytes) % kAlignBytes) / sizeof(T);
  return buffer.data() + skip;
}

// Softmax over the first `cols` keys of `rows` logit rows (row stride `stride`) starting at query row `start`, in
// place; false on a non-finite allowed logit.
template <typename T>
bool softmax_rows(const AttentionHeadInputsT<T>& in, int64_t start, int64_t rows, int64_t cols, int64_t stride,
                  T* logits) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = start + r;
    const bool* mask_row = in.mask ? in.mask + i * in.mask_row_stride : nullptr;
    if (std::isnan(masked_softmax_row(logits + r * stride, mask_row, in.mask_col_stride, cols))) return false;
  }
  return true;
}

// 1 + the last key any of `rows` query rows from `start` may attend (0: none may). Keys past it get probability 0
// in every row of the block, so the block's products can stop there: a causal mask halves a prefill's work.
template <typename T>
int64_t allowed_key_span(const AttentionHeadInputsT<T>& in, int64_t start, int64_t rows, int64_t lk) {
  if (!in.mask) return lk;
  int64_t span = 0;
  for (int64_t r = 0; r < rows && span < lk; ++r) {
    const bool* mask_row = in.mask + (start + r) * in.mask_row_stride;
    for (int64_t j = lk - 1; j >= span; --j) {
      if (mask_row[j * in.mask_col_stride]) {
        span = j + 1;
        break;
      }
    }
  }
  return span;
}

}  // namespace

int64_t default_block_rows(int64_t lk) {
  constexpr int64_t kBlockFloats = 64 * 1024;  // 256 KiB of logits
  return std::clamp<int64_t>(kBlockFloats / std::max<int64_t>(lk, 1), 16, 64);
}

template <typename T>
bool attention_with_importance_head(const AttentionHeadInputsT<T>& in, const AttentionParamsT<T>& p, T* out,
                                    T* importance, AttentionScratchT<T>& scratch) {
  using ConstMap = Eigen::Map<const RowMajor<T>>;
  using Map = Eigen::Map<RowMajor<T>>;
  using StridedMap = Eigen::Map<RowMajor<T>, 0, Eigen::OuterStride<>>;
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  const int64_t lq = p.lq, lk = p.lk, d = p.d, dv = p.dv;
  const int64_t block = std::max<int64_t>(1, std::min(p.block_rows, lq));
  T* q_block = aligned(scratch.q_block, static_cast<size_t>(block * d));
  T* logits_block = aligned(scratch.logits, static_cast<size_t>(block * lk));
  ConstMap keys(in.k, lk, d);
  ConstMap values(in.v, lk, dv);
  Eigen::Map<Array> imp(importance, lk);
  imp.setZero();

  for (int64_t start = 0; start < lq; start += block) {
    const int64_t rows = std::min(block, lq - start);
    Map out_block(out + start * dv, rows, dv);
    const int64_t span = allowed_key_span(in, start, rows, lk);
    if (span == 0) {  // no row of the block may attend anything: zero output, no importance
      out_block.setZero();
      continue;
    }
    Map qb(q_block, rows, d);
    qb = ConstMap(in.q + start * d, rows, d) * p.scaling;  // scaling folded into q, not the [rows, lk] logits
    // The block's logits over keys [0, span), rows lk apart (the same row alignment whatever the span).
    StridedMap logits(logits_block, rows, span, Eigen::OuterStride<>(lk));
    logits.noalias() = qb * keys.topRows(span).transpose();
    if (!softmax_rows(in, start, rows, span, lk, logits_block)) return false;
    for (int64_t r = 0; r < rows; ++r)
      if (!in.query_mask || in.query_mask[start + r])
        imp.head(span) += Eigen::Map<const Array>(logits_block + r * lk, span);
    out_block.noalias() = logits * values.topRows(span);
  }
  return true;
}

template <typename T>
bool attention_probs_head(const AttentionHeadInputsT<T>& in, const AttentionParamsT<T>& p, T* probs,
                          std::vector<T>& q_scaled) {
  using ConstMap = Eigen::Map<const RowMajor<T>>;
  using Map = Eigen::Map<RowMajor<T>>;
  q_scaled.resize(static_cast<size_t>(p.lq * p.d));
  Map qs(q_scaled.data(), p.lq, p.d);
  qs = ConstMap(in.q, p.lq, p.d) * p.scaling;
  Map(probs, p.lq, p.lk).noalias() = qs * ConstMap(in.k, p.lk, p.d).transpose();
  return softmax_rows(in, 0, p.lq, p.lk, p.lk, probs);
}

#define SPATTEN_INSTANTIATE(T)                                                                                    \
  template bool attention_with_importance_head<T>(const AttentionHeadInputsT<T>&, const AttentionParamsT<T>&, T*, \
                                                  T*, AttentionScratchT<T>&);                                     \
  template bool attention_probs_head<T>(const AttentionHeadInputsT<T>&, const AttentionParamsT<T>&, T*,            \
                                        std::vector<T>&);
SPATTEN_INSTANTIATE(float)
SPATTEN_INSTANTIATE(double)
#undef SPATTEN_INSTANTIATE

}  // namespace spatten
