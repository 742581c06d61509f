// Top-k engine cycle model on known inputs (hand-computed), and its scaling with parallelism.
#include <gtest/gtest.h>

#include <numeric>

#include "topk_model.h"

using namespace spatten::hwsim;

TEST(QuickSelect, HandComputedPasses) {
  // 1..16, keep the 4 largest, P = 4, pivot = middle element:
  // pass 1: 16 elements, ceil(16/4)+3 = 7 cycles, pivot 8 -> 8 greater (> 4), keep them;
  // pass 2: 8 elements, ceil(8/4)+3 = 5 cycles, pivot 12 -> 4 greater = k: done. Total 12.
  std::vector<uint32_t> v(16);
  std::iota(v.begin(), v.end(), 1);
  const auto r = quickselect_cycles(v, 4, 4, PivotPolicy::kMiddle);
  EXPECT_EQ(r.cycles, 12u);
  EXPECT_EQ(r.passes, 2u);
  EXPECT_EQ(r.elements, 24u);
}

TEST(QuickSelect, LowerSideAndTies) {
  // 1..16, k = 12, middle pivot: pass 1 pivot 8: 8 greater + 1 equal < 12 -> continue below with 3 more;
  // pass 2 over 1..7 (7 elements, ceil(7/4)+3 = 5), pivot 4: 3 greater (5,6,7) = 3: done. Total 7 + 5.
  std::vector<uint32_t> v(16);
  std::iota(v.begin(), v.end(), 1);
  EXPECT_EQ(quickselect_cycles(v, 12, 4, PivotPolicy::kMiddle).cycles, 12u);
  // all equal: the first pivot is the k-th largest, one pass
  std::vector<uint32_t> same(100, 7);
  EXPECT_EQ(quickselect_cycles(same, 30, 16, PivotPolicy::kHashed).cycles, 7u + 3u);
}

TEST(QuickSelect, NothingToSelectCostsNothing) {
  std::vector<uint32_t> v{3, 1, 2};
  EXPECT_EQ(quickselect_cycles(v, 0, 16).cycles, 0u);
  EXPECT_EQ(quickselect_cycles(v, 3, 16).cycles, 0u);
}

TEST(TopkLatencyModel, MatchesTheRtlModelAndScalesWithParallelism) {
  // The RTL's TopKLatencyModel (random data, P = 16) gives about 220 +- 62 cycles for (1008, 204) and
  // 45 for (102, 20) (spatten-original.md 4.2.4).
  TopkLatencyModel p16(16), p1(1), p64(64);
  const auto big = p16.cycles(1008, 204).cycles;
  EXPECT_GT(big, 158u);
  EXPECT_LT(big, 282u);
  EXPECT_NEAR(double(p16.cycles(102, 20).cycles), 45.0, 15.0);
  // a single comparator is ~ P times slower on the streaming part
  EXPECT_GT(p1.cycles(1008, 204).cycles, 10 * big);
  EXPECT_LT(p64.cycles(1008, 204).cycles, big);
  EXPECT_EQ(p16.cycles(1008, 204).cycles, big);  // memoized, deterministic
  EXPECT_EQ(p16.cycles(50, 50).cycles, 0u);
}
