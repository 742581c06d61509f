#pragma once
// Attention fused with cascade token importance (SpAtten section III-A): softmax(scaling * q k^T) v per
// (batch, head), plus the column sums of the probabilities over the valid query rows, without ever holding the
// [lq, lk] probability map. Query rows are processed in blocks so the block's logits stay in cache; Q·K^T and P·V
// are Eigen matrix products. Torch-free.
#include <cstdint>
#include <vector>

namespace spatten {

// One (batch, head)'s inputs. q, k, v are row-major and contiguous; the mask is read through strides so a
// broadcast mask is never materialised.
struct AttentionHeadInputs {
  const float* q;           // [lq, d]
  const float* k;           // [lk, d]
  const float* v;           // [lk, dv]
  const bool* mask;         // element (i, j) at mask[i * mask_row_stride + j * mask_col_stride]; null = all allowed
  int64_t mask_row_stride;
  int64_t mask_col_stride;
  const bool* query_mask;   // [lq], rows that count towards importance; null = all
};

struct AttentionParams {
  int64_t lq, lk, d, dv;
  float scaling;            // logits = scaling * q · k
  int64_t block_rows;       // query rows per block (>= 1)
};

struct AttentionScratch {
  std::vector<float> q_block;  // [block_rows, d] (+ alignment), the block's queries times scaling
  std::vector<float> logits;   // [block_rows, lk] (+ alignment), softmaxed in place
};

// Query rows per block when the caller has no preference: the block's logits stay within ~256 KiB.
int64_t default_block_rows(int64_t lk);

// Writes out [lq, dv] = softmax(scaling * q k^T over allowed keys) v and importance [lk] (overwritten) =
// sum over rows i with query_mask[i] of the probabilities. A row with no allowed key has zero probabilities and
// zero output. Rows are summed into importance in ascending order, so the result does not depend on threading.
void attention_with_importance_head(const AttentionHeadInputs& in, const AttentionParams& p, float* out,
                                    float* importance, AttentionScratch& scratch);

}  // namespace spatten
