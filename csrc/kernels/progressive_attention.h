#pragma once
// Progressive quantization inside attention (SpAtten section III-D), one fused kernel per (batch, head):
// attention from MSB-only keys; rows whose max probability is below the threshold are recomputed from
// MSB+LSB keys (the LSB refetch). Q·K^T and P·V are Eigen matrix products. Torch-free.
#include <cstdint>
#include <vector>

namespace spatten {

// One (batch, head)'s inputs. All row-major and contiguous except the mask, which is read through strides so a
// broadcast mask is never materialised.
struct ProgressiveHeadInputs {
  const float* q;             // [lq, d]
  const int16_t* k_msb;       // [lk, d]
  const int16_t* k_lsb;       // [lk, d]
  const float* k_scale;       // [lk] when k_scale_per_token, else [1]
  bool k_scale_per_token;
  const float* v;             // [lk, dv]
  const bool* mask;           // element (i, j) at mask[i * mask_row_stride + j * mask_col_stride]; null = all
  int64_t mask_row_stride;
  int64_t mask_col_stride;
};

struct ProgressiveParams {
  int64_t lq, lk, d, dv;
  float threshold;  // refetch rows whose max MSB-only probability is below this
  int lsb_bits;
  float scaling;    // logits = scaling * q · k
};

struct ProgressiveScratch {
  std::vector<float> keys;          // [lk, d] dequantized keys
  std::vector<float> refetch_q;     // [rows refetched, d]
  std::vector<float> refetch_logits;  // [rows refetched, lk]
  std::vector<int64_t> refetch_rows;
};

// Writes out [lq, dv], probs [lq, lk] and refetch [lq]. A row with no allowed key gets zero probabilities, zero
// output and no refetch.
void progressive_attention_head(const ProgressiveHeadInputs& in, const ProgressiveParams& p, float* out,
                                float* probs, bool* refetch, ProgressiveScratch& scratch);

}  // namespace spatten
