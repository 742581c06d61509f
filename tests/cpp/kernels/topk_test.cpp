#include "kernels/topk.h"

#include <gtest/gtest.h>

#include <vector>

namespace {

std::vector<int64_t> TopK(const std::vector<float>& scores, int64_t k) {
  std::vector<int64_t> out(k);
  spatten::topk_indices(scores.data(), 1, static_cast<int64_t>(scores.size()), k, out.data());
  return out;
}

TEST(TopK, KeepsLargestInPositionOrder) {
  EXPECT_EQ(TopK({0.1f, 0.7f, 0.3f, 0.9f, 0.05f}, 2), (std::vector<int64_t>{1, 3}));
}

TEST(TopK, TiesGoToLowerPosition) {
  EXPECT_EQ(TopK({1.f, 2.f, 2.f, 2.f, 0.f}, 2), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(TopK({5.f, 5.f, 5.f}, 1), (std::vector<int64_t>{0}));
}

TEST(TopK, ZeroAndFullK) {
  EXPECT_TRUE(TopK({1.f, 2.f}, 0).empty());
  EXPECT_EQ(TopK({3.f, 1.f, 2.f}, 3), (std::vector<int64_t>{0, 1, 2}));
}

}  // namespace
