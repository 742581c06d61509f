#pragma once
// Attention fused with cascade token importance (SpAtten section III-A): softmax(scaling * q k^T) v per
// (batch, head), plus the column sums of the probabilities over the valid query rows, without ever holding the
// [lq, lk] probability map. Query rows are processed in blocks so the block's logits stay in cache; Q·K^T and P·V
// are Eigen matrix products. Torch-free; T is float or double.
#include <cstdint>
#include <vector>

namespace spatten {

// One (batch, head)'s inputs. q, k, v are row-major and contiguous; the mask is read through strides so a
// broadcast mask is never materialised.
template <typename T>
struct AttentionHeadInputsT {
  const T* q;               // [lq, d]
  const T* k;               // [lk, d]
  const T* v;               // [lk, dv]
  const bool* mask;         // element (i, j) at mask[i * mask_row_stride + j * mask_col_stride]; null = all allowed
  int64_t mask_row_stride;
  int64_t mask_col_stride;
  const bool* query_mask;   // [lq], rows that count towards importance; null = all
};

template <typename T>
struct AttentionParamsT {
  int64_t lq, lk, d, dv;
  T scaling;                // logits = scaling * q · k
  int64_t block_rows;       // query rows per block (>= 1)
};

template <typename T>
struct AttentionScratchT {
  std::vector<T> q_block;  // [block_rows, d] (+ alignment), the block's queries times scaling
  std::vector<T> logits;   // [block_rows, lk] (+ alignment), softmaxed in place
};

using AttentionHeadInputs = AttentionHeadInputsT<float>;
using AttentionParams = AttentionParamsT<float>;
using AttentionScratch = AttentionScratchT<float>;

// Query rows per block when the caller has no preference: the block's logits stay within ~256 KiB.
int64_t default_block_rows(int64_t lk);

// Writes out [lq, dv] = softmax(scaling * q k^T over allowed keys) v and importance [lk] (overwritten) =
// sum over rows i with query_mask[i] of the probabilities. A row with no allowed key has zero probabilities and
// zero output. Rows are summed into importance in ascending order, so the result does not depend on threading.
// Returns false (outputs unspecified) if an allowed logit is NaN or infinite.
template <typename T>
bool attention_with_importance_head(const AttentionHeadInputsT<T>& in, const AttentionParamsT<T>& p, T* out,
                                    T* importance, AttentionScratchT<T>& scratch);

// probs [lq, lk] = the masked softmax of scaling * q k^T that attention_with_importance_head uses (same
// arithmetic: scaling folded into q). Returns false if an allowed logit is NaN or infinite.
template <typename T>
bool attention_probs_head(const AttentionHeadInputsT<T>& in, const AttentionParamsT<T>& p, T* probs,
                          std::vector<T>& q_scaled);

}  // namespace spatten
