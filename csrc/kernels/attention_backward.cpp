#include "kernels/attention_backward.h"

#include <Eigen/Core>

namespace spatten {

template <typename T>
void attention_backward_head(const AttentionGradInputs<T>& in, const AttentionGradShape& s, T scaling, T* grad_q,
                             T* grad_k, T* grad_v, AttentionGradScratch<T>& scratch) {
  using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMajor>;
  using Map = Eigen::Map<RowMajor>;
  const int64_t lq = s.lq, lk = s.lk, d = s.d, dv = s.dv;
  ConstMap probs(in.probs, lq, lk);
  scratch.dlogits.resize(static_cast<size_t>(lq * lk));
  Map ds(scratch.dlogits.data(), lq, lk);

  // dP, then dS in place.
  if (in.grad_out) {
    ConstMap go(in.grad_out, lq, dv);
    ds.noalias() = go * ConstMap(in.v, lk, dv).transpose();
    Map(grad_v, lk, dv).noalias() = probs.transpose() * go;
  } else {
    ds.setZero();
    Map(grad_v, lk, dv).setZero();
  }
  if (in.grad_probs) ds += ConstMap(in.grad_probs, lq, lk);
  for (int64_t i = 0; i < lq; ++i) {
    const T dot = (ds.row(i).array() * probs.row(i).array()).sum();
    ds.row(i) = (probs.row(i).array() * (ds.row(i).array() - dot)).matrix();
  }
  ds *= scaling;

  Map gq(grad_q, lq, d);
  gq.noalias() = ds * ConstMap(in.keys, lk, d);
  if (in.keys_alt && in.row_alt) {
    ConstMap alt(in.keys_alt, lk, d);
    for (int64_t i = 0; i < lq; ++i)
      if (in.row_alt[i]) gq.row(i).noalias() = ds.row(i) * alt;
  }
  Map(grad_k, lk, d).noalias() = ds.transpose() * ConstMap(in.q, lq, d);
}

template void attention_backward_head<float>(const AttentionGradInputs<float>&, const AttentionGradShape&, float,
                                             float*, float*, float*, AttentionGradScratch<float>&);
template void attention_backward_head<double>(const AttentionGradInputs<double>&, const AttentionGradShape&, double,
                                              double*, double*, double*, AttentionGradScratch<double>&);

}  // namespace spatten
