#pragma once
// Progressive quantization storage (SpAtten section III-D): symmetric linear quantization to
// b = msb_bits + lsb_bits bits, split into an MSB part and an unsigned LSB part. Torch-free, float and double; callers validate
// 1 <= msb_bits, 0 <= lsb_bits, 2 <= b <= 16.
#include <cstdint>

namespace spatten {

// Quantizes `groups` contiguous groups of `group_size` values, one scale per group:
//   scale = max|x| / qmax (1 for an all-zero group; at least the smallest positive float), qmax = 2^(b-1) - 1,
//   q = clamp(round_half_even(x / scale), -qmax, qmax), msb = floor(q / 2^lsb_bits), lsb = q - msb * 2^lsb_bits.
// x, msb, lsb: [groups * group_size]; scale: [groups]. Returns false if x holds NaN or Inf.
// T is float or double. Only a division, a max and a round-half-even decide a level, so the result is exact IEEE
// arithmetic: identical on every CPU and to the PyTorch reference in the same dtype (no FMA can contract it).
template <typename T>
bool quantize_msb_lsb_groups(const T* x, int64_t groups, int64_t group_size, int msb_bits, int lsb_bits,
                             int16_t* msb, int16_t* lsb, T* scale);

// Dequantizes `rows` rows of length d; row r uses scale[r / rows_per_scale]:
//   with lsb:    (msb * 2^l + lsb) * scale
//   lsb == null: (msb * 2^l + 2^(l-1)) * scale  (the midpoint of the missing LSBs; no offset when l == 0).
// One rounding (the product of an exact integer and the scale): exact IEEE arithmetic, like the quantizer.
template <typename T>
void dequantize_msb_lsb_rows(const int16_t* msb, const int16_t* lsb, const T* scale, int64_t rows, int64_t d,
                             int64_t rows_per_scale, int lsb_bits, T* out);

}  // namespace spatten
