#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace spatten {

bool quantize_msb_lsb_groups(const float* x, int64_t groups, int64_t group_size, int msb_bits, int lsb_bits,
                             int16_t* msb, int16_t* lsb, float* scale) {
  const int32_t qmax = (int32_t{1} << (msb_bits + lsb_bits - 1)) - 1;
  const float qmax_f = static_cast<float>(qmax);
  const int32_t lsb_mask = (int32_t{1} << lsb_bits) - 1;
  for (int64_t g = 0; g < groups; ++g) {
    const float* xg = x + g * group_size;
    float group_max = 0.0f;
    bool finite = true;
    for (int64_t i = 0; i < group_size; ++i) {
      finite &= std::isfinite(xg[i]);
      group_max = std::max(group_max, std::fabs(xg[i]));
    }
    if (!finite) return false;
    // Division (not a reciprocal multiply) so the result is bit-identical to the PyTorch reference. A scale that
    // underflows (subnormal group maximum) is floored at the smallest positive float so x / scale stays finite.
    const float s = group_max > 0.0f ? std::max(group_max / qmax_f, std::numeric_limits<float>::denorm_min()) : 1.0f;
    scale[g] = s;
    for (int64_t i = 0; i < group_size; ++i) {
      // nearbyint rounds half to even under the default rounding mode, like torch.round.
      const float r = std::nearbyint(xg[i] / s);
      const int32_t q = static_cast<int32_t>(std::clamp(r, -qmax_f, qmax_f));
      const int32_t low = q & lsb_mask;  // q mod 2^l in [0, 2^l), also for negative q (two's complement)
      lsb[g * group_size + i] = static_cast<int16_t>(low);
      msb[g * group_size + i] = static_cast<int16_t>((q - low) >> lsb_bits);
    }
  }
  return true;
}

void dequantize_msb_lsb_rows(const int16_t* msb, const int16_t* lsb, const float* scale, int64_t rows, int64_t d,
                             int64_t rows_per_scale, int lsb_bits, float* out) {
  const int32_t step = int32_t{1} << lsb_bits;
  const int32_t midpoint = lsb_bits > 0 ? step / 2 : 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float s = scale[r / rows_per_scale];
    const int64_t base = r * d;
    for (int64_t i = 0; i < d; ++i) {
      const int32_t low = lsb ? static_cast<int32_t>(lsb[base + i]) : midpoint;
      out[base + i] = static_cast<float>(static_cast<int32_t>(msb[base + i]) * step + low) * s;
    }
  }
}

}  // namespace spatten
