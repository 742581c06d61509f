#include "kernels/progressive_attention.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

#include "kernels/masked_softmax.h"
#include "kernels/quantize.h"

namespace spatten {
namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMajor>;
using Map = Eigen::Map<RowMajor>;

// The row's masked softmax (see masked_softmax.h) with this head's mask.
float head_softmax_row(float* row, const ProgressiveHeadInputs& in, int64_t i, int64_t lk) {
  const bool* mask_row = in.mask ? in.mask + i * in.mask_row_stride : nullptr;
  return spatten::masked_softmax_row(row, mask_row, in.mask_col_stride, lk);
}

void dequantize_keys(const ProgressiveHeadInputs& in, const ProgressiveParams& p, bool with_lsb, float* keys) {
  dequantize_msb_lsb_rows(in.k_msb, with_lsb ? in.k_lsb : nullptr, in.k_scale, p.lk, p.d,
                          in.k_scale_per_token ? 1 : std::max<int64_t>(p.lk, 1), p.lsb_bits, keys);
}

}  // namespace

void progressive_attention_head(const ProgressiveHeadInputs& in, const ProgressiveParams& p, float* out,
                                float* probs, bool* refetch, ProgressiveScratch& scratch) {
  const int64_t lq = p.lq, lk = p.lk, d = p.d, dv = p.dv;
  scratch.keys.resize(static_cast<size_t>(lk * d));
  ConstMap q(in.q, lq, d);
  ConstMap keys(scratch.keys.data(), lk, d);
  Map logits(probs, lq, lk);  // logits are softmaxed in place into probs

  // Pass 1: MSB-only keys (missing LSBs at their midpoint).
  dequantize_keys(in, p, /*with_lsb=*/false, scratch.keys.data());
  logits.noalias() = (q * keys.transpose()) * p.scaling;
  scratch.refetch_rows.clear();
  for (int64_t i = 0; i < lq; ++i) {
    const float prob_max = head_softmax_row(probs + i * lk, in, i, lk);
    refetch[i] = prob_max >= 0.0f && prob_max < p.threshold;
    if (refetch[i]) scratch.refetch_rows.push_back(i);
  }

  // Pass 2: the low-confidence rows again, from MSB+LSB keys, as one matrix product.
  const int64_t nr = static_cast<int64_t>(scratch.refetch_rows.size());
  if (nr > 0) {
    dequantize_keys(in, p, /*with_lsb=*/true, scratch.keys.data());
    scratch.refetch_q.resize(static_cast<size_t>(nr * d));
    scratch.refetch_logits.resize(static_cast<size_t>(nr * lk));
    Map rq(scratch.refetch_q.data(), nr, d);
    for (int64_t r = 0; r < nr; ++r) rq.row(r) = q.row(scratch.refetch_rows[r]);
    Map rlogits(scratch.refetch_logits.data(), nr, lk);
    rlogits.noalias() = (rq * keys.transpose()) * p.scaling;
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t i = scratch.refetch_rows[r];
      std::copy_n(scratch.refetch_logits.data() + r * lk, lk, probs + i * lk);
      head_softmax_row(probs + i * lk, in, i, lk);
    }
  }

  Map(out, lq, dv).noalias() = ConstMap(probs, lq, lk) * ConstMap(in.v, lk, dv);
}

}  // namespace spatten
