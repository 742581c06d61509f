#include "kernels/topk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace {

std::vector<int64_t> TopK(const std::vector<float>& scores, int64_t k) {
  std::vector<int64_t> out(k);
  EXPECT_TRUE(spatten::topk_indices(scores.data(), 1, static_cast<int64_t>(scores.size()), k, out.data()));
  return out;
}

// Independent reference: stable sort of positions by descending value, first k, then ascending positions.
std::vector<int64_t> SortReference(const std::vector<float>& scores, int64_t k) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

TEST(TopK, KeepsLargestInPositionOrder) {
  EXPECT_EQ(TopK({0.1f, 0.7f, 0.3f, 0.9f, 0.05f}, 2), (std::vector<int64_t>{1, 3}));
}

TEST(TopK, TiesGoToLowerPosition) {
  EXPECT_EQ(TopK({1.f, 2.f, 2.f, 2.f, 0.f}, 2), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(TopK({5.f, 5.f, 5.f}, 1), (std::vector<int64_t>{0}));
}

TEST(TopK, SignedZerosAreEqual) {
  EXPECT_EQ(TopK({-0.f, 0.f, -1.f}, 1), (std::vector<int64_t>{0}));
  EXPECT_EQ(TopK({-1.f, 0.f, -0.f}, 1), (std::vector<int64_t>{1}));
}

TEST(TopK, ZeroAndFullK) {
  EXPECT_TRUE(TopK({1.f, 2.f}, 0).empty());
  EXPECT_EQ(TopK({3.f, 1.f, 2.f}, 3), (std::vector<int64_t>{0, 1, 2}));
}

TEST(TopK, NanIsReportedForEveryK) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> row(1000, 1.f);
  row[637] = nan;
  for (int64_t k : {0, 1, 500, 1000}) {
    std::vector<int64_t> out(k);
    EXPECT_FALSE(spatten::topk_indices(row.data(), 1, 1000, k, out.data())) << "k=" << k;
  }
  EXPECT_TRUE(spatten::has_nan(row.data(), 1000));
  EXPECT_FALSE(spatten::has_nan(row.data(), 637));
}

TEST(TopK, MatchesSortReferenceOnBothSelectionPaths) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> few(-4, 4);
  for (int64_t n : {3, 100, 511, 512, 2000, 20000}) {
    for (int kind = 0; kind < 4; ++kind) {
      std::vector<float> row(n);
      for (auto& x : row) {
        if (kind == 0) x = normal(rng);
        if (kind == 1) x = static_cast<float>(few(rng));  // many ties
        if (kind == 2) x = 1.f + static_cast<float>(few(rng) + 4) * std::ldexp(1.f, -23);  // low bits differ
        if (kind == 3) x = normal(rng) * 1e37f;
      }
      if (kind == 3) row[n / 2] = std::numeric_limits<float>::infinity();
      for (int64_t k : {int64_t{1}, n / 3, n / 2, n - 1}) {
        if (k < 1) continue;
        EXPECT_EQ(TopK(row, k), SortReference(row, k)) << "n=" << n << " kind=" << kind << " k=" << k;
      }
    }
  }
}

TEST(TopK, RowsAreIndependent) {
  std::vector<float> rows = {1.f, 3.f, 2.f, 9.f, 8.f, 7.f};
  std::vector<int64_t> out(4);
  ASSERT_TRUE(spatten::topk_indices(rows.data(), 2, 3, 2, out.data()));
  EXPECT_EQ(out, (std::vector<int64_t>{1, 2, 0, 1}));
}

}  // namespace
