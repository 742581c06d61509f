#include "kernels/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

TEST(Quantize, HandComputedMsbLsbSplit) {
  // b = 4: qmax = 7, scale = 7 / 7 = 1; q = round_half_even(x) = {7, -4, 2, 0}.
  const std::vector<float> x = {7.f, -3.5f, 1.75f, 0.f};
  std::vector<int16_t> msb(4), lsb(4);
  float scale = 0.f;
  ASSERT_TRUE(spatten::quantize_msb_lsb_groups(x.data(), 1, 4, 2, 2, msb.data(), lsb.data(), &scale));
  EXPECT_EQ(scale, 1.f);
  EXPECT_EQ(msb, (std::vector<int16_t>{1, -1, 0, 0}));
  EXPECT_EQ(lsb, (std::vector<int16_t>{3, 0, 2, 0}));

  std::vector<float> back(4);
  spatten::dequantize_msb_lsb_rows(msb.data(), lsb.data(), &scale, 1, 4, 1, 2, back.data());
  EXPECT_EQ(back, (std::vector<float>{7.f, -4.f, 2.f, 0.f}));
  spatten::dequantize_msb_lsb_rows<float>(msb.data(), nullptr, &scale, 1, 4, 1, 2, back.data());
  EXPECT_EQ(back, (std::vector<float>{6.f, -2.f, 2.f, 2.f}));  // missing LSBs at their midpoint 2
}

TEST(Quantize, HalfToEvenAndZeroGroup) {
  const std::vector<float> x = {7.f, 2.5f, -2.5f, 0.5f, 0.f, 0.f, 0.f, 0.f};
  std::vector<int16_t> msb(8), lsb(8);
  float scale[2];
  ASSERT_TRUE(spatten::quantize_msb_lsb_groups(x.data(), 2, 4, 4, 0, msb.data(), lsb.data(), scale));
  EXPECT_EQ(msb, (std::vector<int16_t>{7, 2, -2, 0, 0, 0, 0, 0}));
  EXPECT_EQ(scale[1], 1.f);  // all-zero group
}

TEST(Quantize, RoundTripWithinHalfStepForEveryWidth) {
  std::vector<float> x(64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i) * 0.7f) * 3.f;
  std::vector<int16_t> msb(64), lsb(64);
  std::vector<float> back(64);
  for (int m = 1; m <= 16; ++m) {
    for (int l = 0; m + l <= 16; ++l) {
      if (m + l < 2) continue;
      float scale = 0.f;
      ASSERT_TRUE(spatten::quantize_msb_lsb_groups(x.data(), 1, 64, m, l, msb.data(), lsb.data(), &scale));
      spatten::dequantize_msb_lsb_rows(msb.data(), lsb.data(), &scale, 1, 64, 1, l, back.data());
      for (size_t i = 0; i < x.size(); ++i) {
        EXPECT_LE(std::fabs(back[i] - x[i]), scale * 0.5f * 1.0001f) << "m=" << m << " l=" << l;
        EXPECT_GE(lsb[i], 0);
        EXPECT_LT(lsb[i], 1 << l);
      }
    }
  }
}

TEST(Quantize, SubnormalGroupKeepsAFiniteScaleAndNonFiniteIsReported) {
  std::vector<float> x = {1e-45f, -1e-45f};
  std::vector<int16_t> msb(2), lsb(2);
  float scale = 0.f;
  ASSERT_TRUE(spatten::quantize_msb_lsb_groups(x.data(), 1, 2, 6, 4, msb.data(), lsb.data(), &scale));
  EXPECT_GT(scale, 0.f);
  x[1] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(spatten::quantize_msb_lsb_groups(x.data(), 1, 2, 6, 4, msb.data(), lsb.data(), &scale));
}

TEST(Dequantize, PerTokenScales) {
  const std::vector<int16_t> msb = {1, 2, 3, 4};  // rows = 2, d = 2
  const float scales[] = {0.5f, 2.f};
  std::vector<float> out(4);
  spatten::dequantize_msb_lsb_rows<float>(msb.data(), nullptr, scales, 2, 2, 1, 0, out.data());
  EXPECT_EQ(out, (std::vector<float>{0.5f, 1.f, 6.f, 8.f}));
}

}  // namespace
