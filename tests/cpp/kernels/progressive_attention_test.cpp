#include "kernels/progressive_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace {

struct Head {
  // lq = 2, lk = 3, d = 2, dv = 1; per-head scale 0.5, lsb_bits = 1.
  std::vector<float> q = {1.f, 0.f, 0.f, 1.f};
  std::vector<int16_t> k_msb = {1, 0, 0, 1, -1, -1};
  std::vector<int16_t> k_lsb = {1, 0, 0, 1, 0, 1};
  float scale = 0.5f;
  std::vector<float> v = {1.f, 2.f, 3.f};
  spatten::ProgressiveHeadInputs inputs(const bool* mask = nullptr) const {
    return {q.data(), k_msb.data(), k_lsb.data(), &scale, false, v.data(), mask, 3, 1};
  }
};

// softmax(logits) with the plain formula, for the expectations.
std::vector<float> Softmax(std::vector<float> logits) {
  float sum = 0.f;
  for (float& x : logits) sum += (x = std::exp(x));
  for (float& x : logits) x /= sum;
  return logits;
}

TEST(ProgressiveAttention, MsbOnlyKeysWhenConfident) {
  Head head;
  const spatten::ProgressiveParams params{2, 3, 2, 1, /*threshold=*/0.f, /*lsb_bits=*/1, /*scaling=*/1.f};
  std::vector<float> out(2), probs(6);
  bool refetch[2] = {true, true};
  spatten::ProgressiveScratch scratch;
  spatten::progressive_attention_head(head.inputs(), params, out.data(), probs.data(), refetch, scratch);
  // MSB-only keys: (msb * 2 + 1) * 0.5 = {1.5, 0.5}, {0.5, 1.5}, {-0.5, -0.5}.
  const auto row0 = Softmax({1.5f, 0.5f, -0.5f});
  EXPECT_FALSE(refetch[0]);
  EXPECT_FALSE(refetch[1]);
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(probs[j], row0[j], 1e-6);
  EXPECT_NEAR(out[0], row0[0] * 1 + row0[1] * 2 + row0[2] * 3, 1e-5);
}

TEST(ProgressiveAttention, RefetchUsesFullKeysAndMaskedRowIsZero) {
  Head head;
  const bool mask[] = {true, true, true, false, false, false};  // row 1 has no allowed key
  const spatten::ProgressiveParams params{2, 3, 2, 1, /*threshold=*/2.f, /*lsb_bits=*/1, /*scaling=*/1.f};
  std::vector<float> out(2), probs(6);
  bool refetch[2];
  spatten::ProgressiveScratch scratch;
  spatten::progressive_attention_head(head.inputs(mask), params, out.data(), probs.data(), refetch, scratch);
  // Full keys: (msb * 2 + lsb) * 0.5 = {1.5, 0}, {0, 1.5}, {-1, -0.5}.
  const auto row0 = Softmax({1.5f, 0.f, -1.f});
  EXPECT_TRUE(refetch[0]);
  EXPECT_FALSE(refetch[1]);
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(probs[j], row0[j], 1e-6);
  for (int j = 3; j < 6; ++j) EXPECT_EQ(probs[j], 0.f);
  EXPECT_EQ(out[1], 0.f);
}

}  // namespace
