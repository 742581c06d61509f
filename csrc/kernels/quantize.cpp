#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace spatten {

template <typename T>
bool quantize_msb_lsb_groups(const T* x, int64_t groups, int64_t group_size, int msb_bits, int lsb_bits,
                             int16_t* msb, int16_t* lsb, T* scale) {
  const int32_t qmax = (int32_t{1} << (msb_bits + lsb_bits - 1)) - 1;
  const T qmax_f = static_cast<T>(qmax);
  const int32_t lsb_mask = (int32_t{1} << lsb_bits) - 1;
  for (int64_t g = 0; g < groups; ++g) {
    const T* xg = x + g * group_size;
    T group_max = T(0);
    bool finite = true;
    for (int64_t i = 0; i < group_size; ++i) {
      finite &= std::isfinite(xg[i]);
      group_max = std::max(group_max, std::fabs(xg[i]));
    }
    if (!finite) return false;
    // Division (not a reciprocal multiply) so the result is bit-identical to the PyTorch reference. A scale that
    // underflows (subnormal group maximum) is floored at the smallest positive float so x / scale stays finite.
    const T s = group_max > T(0) ? std::max(group_max / qmax_f, std::numeric_limits<T>::denorm_min()) : T(1);
    scale[g] = s;
    for (int64_t i = 0; i < group_size; ++i) {
      // nearbyint rounds half to even under the default rounding mode, like torch.round.
      const T r = std::nearbyint(xg[i] / s);
      const int32_t q = static_cast<int32_t>(std::clamp(r, -qmax_f, qmax_f));
      const int32_t low = q & lsb_mask;  // q mod 2^l in [0, 2^l), also for negative q (two's complement)
      lsb[g * group_size + i] = static_cast<int16_t>(low);
      msb[g * group_size + i] = static_cast<int16_t>((q - low) >> lsb_bits);
    }
  }
  return true;
}

template <typename T>
void dequantize_msb_lsb_rows(const int16_t* msb, const int16_t* lsb, const T* scale, int64_t rows, int64_t d,
                             int64_t rows_per_scale, int lsb_bits, T* out) {
  const int32_t step = int32_t{1} << lsb_bits;
  const int32_t midpoint = lsb_bits > 0 ? step / 2 : 0;
  for (int64_t r = 0; r < rows; ++r) {
    const T s = scale[r / rows_per_scale];
    const int64_t base = r * d;
    for (int64_t i = 0; i < d; ++i) {
      const int32_t low = lsb ? static_cast<int32_t>(lsb[base + i]) : midpoint;
      out[base + i] = static_cast<T>(static_cast<int32_t>(msb[base + i]) * step + low) * s;
    }
  }
}

#define SPATTEN_INSTANTIATE(T)                                                                                  \
  template bool quantize_msb_lsb_groups<T>(const T*, int64_t, int64_t, int, int, int16_t*, int16_t*, T*);        \
  template void dequantize_msb_lsb_rows<T>(const int16_t*, const int16_t*, const T*, int64_t, int64_t, int64_t, int, \
                                           T*);
SPATTEN_INSTANTIATE(float)
SPATTEN_INSTANTIATE(double)
#undef SPATTEN_INSTANTIATE

}  // namespace spatten
