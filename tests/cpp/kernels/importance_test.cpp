#include "kernels/importance.h"

#include <gtest/gtest.h>

#include <vector>

namespace {

TEST(TokenImportance, SumsOverHeadsAndValidQueries) {
  // heads = 2, lq = 2, lk = 3
  const std::vector<float> probs = {0.5f, 0.25f, 0.25f, 0.1f, 0.2f, 0.7f, 1.f, 0.f, 0.f, 0.3f, 0.3f, 0.4f};
  std::vector<float> out(3, -1.f);
  spatten::token_importance_columns(probs.data(), 2, 2, 3, nullptr, nullptr, nullptr, 0, 3, out.data());
  EXPECT_FLOAT_EQ(out[0], 1.9f);
  EXPECT_FLOAT_EQ(out[1], 0.75f);
  EXPECT_FLOAT_EQ(out[2], 1.35f);

  const bool query_mask[] = {true, false};
  const bool key_mask[] = {true, true, false};
  const std::vector<float> acc = {10.f, 20.f, 30.f};
  spatten::token_importance_columns(probs.data(), 2, 2, 3, query_mask, key_mask, acc.data(), 0, 3, out.data());
  EXPECT_FLOAT_EQ(out[0], 11.5f);
  EXPECT_FLOAT_EQ(out[1], 20.25f);
  EXPECT_FLOAT_EQ(out[2], 30.f);
}

TEST(TokenImportance, ColumnRangeTouchesOnlyItsColumns) {
  const std::vector<float> probs = {1.f, 2.f, 3.f, 4.f};  // heads = 1, lq = 1, lk = 4
  std::vector<float> out(4, -7.f);
  spatten::token_importance_columns(probs.data(), 1, 1, 4, nullptr, nullptr, nullptr, 1, 3, out.data());
  EXPECT_EQ(out, (std::vector<float>{-7.f, 2.f, 3.f, -7.f}));
}

TEST(HeadImportance, SumsAbsoluteValuesOfValidRows) {
  const std::vector<float> attn_out = {1.f, -2.f, 0.5f, 0.5f, -3.f, 0.f};  // lq = 3, d = 2
  EXPECT_FLOAT_EQ(spatten::head_importance_head(attn_out.data(), 3, 2, nullptr), 7.f);
  const bool query_mask[] = {false, true, true};
  EXPECT_FLOAT_EQ(spatten::head_importance_head(attn_out.data(), 3, 2, query_mask), 4.f);
}

}  // namespace
