#pragma once
// Progressive quantization inside attention (SpAtten section III-D), one fused kernel per (batch, head):
// attention from MSB-only keys; rows whose max probability is below the threshold are recomputed from
// MSB+LSB keys (the LSB refetch). Q·K^T and P·V are Eigen matrix products. Torch-free; T is float or double.
#include <cstdint>
#include <vector>

namespace spatten {

// One (batch, head)'s inputs. All row-major and contiguous except the mask, which is read through strides so a
// broadcast mask is never materialised.
template <typename T>
struct ProgressiveHeadInputsT {
  const T* q;                 // [lq, d]
  const int16_t* k_msb;       // [lk, d]
  const int16_t* k_lsb;       // [lk, d]
  const T* k_scale;           // [lk] when k_scale_per_token, else [1]
  bool k_scale_per_token;
  const T* v;                 // [lk, dv]
  const bool* mask;           // element (i, j) at mask[i * mask_row_stride + j * mask_col_stride]; null = all
  int64_t mask_row_stride;
  int64_t mask_col_stride;
};

template <typename T>
struct ProgressiveParamsT {
  int64_t lq, lk, d, dv;
  T threshold;  // refetch rows whose max MSB-only probability is below this
  int lsb_bits;
  T scaling;    // logits = scaling * q · k
};

template <typename T>
struct ProgressiveScratchT {
  std::vector<T> keys;            // [lk, d] dequantized keys
  std::vector<T> refetch_q;       // [rows refetched, d]
  std::vector<T> refetch_logits;  // [rows refetched, lk]
  std::vector<int64_t> refetch_rows;
};

using ProgressiveHeadInputs = ProgressiveHeadInputsT<float>;
using ProgressiveParams = ProgressiveParamsT<float>;
using ProgressiveScratch = ProgressiveScratchT<float>;

// Writes out [lq, dv], probs [lq, lk] and refetch [lq]. A row with no allowed key gets zero probabilities, zero
// output and no refetch. Returns false (outputs unspecified) if an allowed logit is NaN or infinite.
template <typename T>
bool progressive_attention_head(const ProgressiveHeadInputsT<T>& in, const ProgressiveParamsT<T>& p, T* out,
                                T* probs, bool* refetch, ProgressiveScratchT<T>& scratch);

// The head's dequantized keys [lk, d]: MSB-only (missing LSBs at their midpoint) or MSB+LSB.
template <typename T>
void progressive_keys(const ProgressiveHeadInputsT<T>& in, const ProgressiveParamsT<T>& p, bool with_lsb, T* keys);

}  // namespace spatten
