#include "kernels/local_value.h"

#include <gtest/gtest.h>

#include <limits>
#include <vector>

namespace {

TEST(LocalValue, KeepsTopKRowsWithoutRenormalisation) {
  const std::vector<float> probs = {0.1f, 0.6f, 0.3f, 0.5f, 0.4f, 0.1f};  // lq = 2, lk = 3
  const std::vector<float> v = {1.f, 0.f, 0.f, 1.f, 2.f, 2.f};            // lk = 3, d = 2
  std::vector<float> out(4);
  std::vector<int64_t> kept(4);
  spatten::LocalValueScratch scratch;
  const int64_t fetched =
      spatten::local_value_attention_head(probs.data(), v.data(), 2, 3, 2, 2, out.data(), kept.data(), scratch);
  EXPECT_EQ(kept, (std::vector<int64_t>{1, 2, 0, 1}));
  EXPECT_EQ(fetched, 3);
  EXPECT_FLOAT_EQ(out[0], 0.6f);
  EXPECT_FLOAT_EQ(out[1], 1.2f);
  EXPECT_FLOAT_EQ(out[2], 0.5f);
  EXPECT_FLOAT_EQ(out[3], 0.4f);
}

TEST(LocalValue, KZeroFetchesNothingAndNanIsReported) {
  std::vector<float> probs = {0.2f, 0.8f};
  const std::vector<float> v = {1.f, 2.f};
  std::vector<float> out(1, 5.f);
  spatten::LocalValueScratch scratch;
  EXPECT_EQ(spatten::local_value_attention_head<float>(probs.data(), v.data(), 1, 2, 1, 0, out.data(), nullptr, scratch), 0);
  EXPECT_EQ(out[0], 0.f);
  probs[1] = std::numeric_limits<float>::quiet_NaN();
  std::vector<int64_t> kept(1);
  EXPECT_EQ(spatten::local_value_attention_head(probs.data(), v.data(), 1, 2, 1, 1, out.data(), kept.data(), scratch),
            -1);
}

}  // namespace
