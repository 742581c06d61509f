#pragma once
// Backward of softmax attention for one (batch, head), shared by the attention ops' autograd. Torch-free; T is
// float or double. With P = softmax_row(scaling * q K_i^T) (K_i: the keys row i attended with) and out = P v:
//   dP = grad_out v^T + grad_probs,   dS = P ∘ (dP - rowsum(P ∘ dP)),
//   grad_q[i] = scaling * dS[i] K_i,   grad_k = scaling * dS^T q,   grad_v = P^T grad_out.
// Masked keys and rows with no allowed key have P = 0 and so get no gradient.
#include <cstdint>
#include <vector>

namespace spatten {

template <typename T>
struct AttentionGradInputs {
  const T* q;           // [lq, d]
  const T* keys;        // [lk, d], the keys of every row without row_alt
  const T* keys_alt;    // [lk, d] or null: the keys of the rows with row_alt[i] (progressive: MSB+LSB)
  const bool* row_alt;  // [lq] or null
  const T* v;           // [lk, dv]
  const T* probs;       // [lq, lk]
  const T* grad_out;    // [lq, dv] or null (no gradient on the output)
  const T* grad_probs;  // [lq, lk] or null (no gradient on the probabilities)
};

struct AttentionGradShape {
  int64_t lq, lk, d, dv;
};

template <typename T>
struct AttentionGradScratch {
  std::vector<T> dlogits;  // [lq, lk]
};

// Writes grad_q [lq, d], grad_k [lk, d] (the gradient with respect to the keys as used, summed over both key sets:
// for quantized keys the straight-through gradient) and grad_v [lk, dv] (zeros without grad_out).
template <typename T>
void attention_backward_head(const AttentionGradInputs<T>& in, const AttentionGradShape& s, T scaling, T* grad_q,
                             T* grad_k, T* grad_v, AttentionGradScratch<T>& scratch);

}  // namespace spatten
