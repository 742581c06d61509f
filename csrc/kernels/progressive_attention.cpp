#include "kernels/progressive_attention.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

#include "kernels/masked_softmax.h"
#include "kernels/quantize.h"

namespace spatten {
namespace {

template <typename T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// The row's masked softmax (see masked_softmax.h) with this head's mask.
template <typename T>
T head_softmax_row(T* row, const ProgressiveHeadInputsT<T>& in, int64_t i, int64_t lk) {
  const bool* mask_row = in.mask ? in.mask + i * in.mask_row_stride : nullptr;
  return spatten::masked_softmax_row(row, mask_row, in.mask_col_stride, lk);
}

}  // namespace

template <typename T>
void progressive_keys(const ProgressiveHeadInputsT<T>& in, const ProgressiveParamsT<T>& p, bool with_lsb, T* keys) {
  dequantize_msb_lsb_rows(in.k_msb, with_lsb ? in.k_lsb : nullptr, in.k_scale, p.lk, p.d,
                          in.k_scale_per_token ? 1 : std::max<int64_t>(p.lk, 1), p.lsb_bits, keys);
}

template <typename T>
bool progressive_attention_head(const ProgressiveHeadInputsT<T>& in, const ProgressiveParamsT<T>& p, T* out,
                                T* probs, bool* refetch, ProgressiveScratchT<T>& scratch) {
  using ConstMap = Eigen::Map<const RowMajor<T>>;
  using Map = Eigen::Map<RowMajor<T>>;
  const int64_t lq = p.lq, lk = p.lk, d = p.d, dv = p.dv;
  scratch.keys.resize(static_cast<size_t>(lk * d));
  ConstMap q(in.q, lq, d);
  ConstMap keys(scratch.keys.data(), lk, d);
  Map logits(probs, lq, lk);  // logits are softmaxed in place into probs

  // Pass 1: MSB-only keys (missing LSBs at their midpoint).
  progressive_keys(in, p, /*with_lsb=*/false, scratch.keys.data());
  logits.noalias() = (q * keys.transpose()) * p.scaling;
  scratch.refetch_rows.clear();
  for (int64_t i = 0; i < lq; ++i) {
    const T prob_max = head_softmax_row(probs + i * lk, in, i, lk);
    if (std::isnan(prob_max)) return false;
    refetch[i] = prob_max >= T(0) && prob_max < p.threshold;
    if (refetch[i]) scratch.refetch_rows.push_back(i);
  }

  // Pass 2: the low-confidence rows again, from MSB+LSB keys, as one matrix product.
  const int64_t nr = static_cast<int64_t>(scratch.refetch_rows.size());
  if (nr > 0) {
    progressive_keys(in, p, /*with_lsb=*/true, scratch.keys.data());
    scratch.refetch_q.resize(static_cast<size_t>(nr * d));
    scratch.refetch_logits.resize(static_cast<size_t>(nr * lk));
    Map rq(scratch.refetch_q.data(), nr, d);
    for (int64_t r = 0; r < nr; ++r) rq.row(r) = q.row(scratch.refetch_rows[r]);
    Map rlogits(scratch.refetch_logits.data(), nr, lk);
    rlogits.noalias() = (rq * keys.transpose()) * p.scaling;
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t i = scratch.refetch_rows[r];
      std::copy_n(scratch.refetch_logits.data() + r * lk, lk, probs + i * lk);
      if (std::isnan(head_softmax_row(probs + i * lk, in, i, lk))) return false;
    }
  }

  Map(out, lq, dv).noalias() = ConstMap(probs, lq, lk) * ConstMap(in.v, lk, dv);
  return true;
}

#define SPATTEN_INSTANTIATE(T)                                                                                   \
  template void progressive_keys<T>(const ProgressiveHeadInputsT<T>&, const ProgressiveParamsT<T>&, bool, T*);  \
  template bool progressive_attention_head<T>(const ProgressiveHeadInputsT<T>&, const ProgressiveParamsT<T>&, T*, \
                                              T*, bool*, ProgressiveScratchT<T>&);
SPATTEN_INSTANTIATE(float)
SPATTEN_INSTANTIATE(double)
#undef SPATTEN_INSTANTIATE

}  // namespace spatten
