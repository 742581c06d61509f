#include "kernels/attention_importance.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

namespace {

// Naive loops over the contract (double precision): the independent reference.
struct Naive {
  std::vector<double> out, importance;
};

Naive NaiveAttention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                     const std::vector<char>& mask, const std::vector<char>& query_mask, int64_t lq, int64_t lk,
                     int64_t d, int64_t dv, float scaling) {
  Naive r{std::vector<double>(lq * dv, 0.0), std::vector<double>(lk, 0.0)};
  std::vector<double> p(lk);
  for (int64_t i = 0; i < lq; ++i) {
    double mx = -INFINITY;
    bool any = false;
    for (int64_t j = 0; j < lk; ++j) {
      if (!mask.empty() && !mask[i * lk + j]) continue;
      double dot = 0;
      for (int64_t t = 0; t < d; ++t) dot += double(q[i * d + t]) * k[j * d + t];
      p[j] = dot * scaling;
      mx = std::max(mx, p[j]);
      any = true;
    }
    double sum = 0;
    for (int64_t j = 0; j < lk; ++j) {
      const bool allowed = mask.empty() || mask[i * lk + j];
      p[j] = (allowed && any) ? std::exp(p[j] - mx) : 0.0;
      sum += p[j];
    }
    for (int64_t j = 0; j < lk; ++j) {
      if (sum > 0) p[j] /= sum;
      for (int64_t c = 0; c < dv; ++c) r.out[i * dv + c] += p[j] * v[j * dv + c];
      if (query_mask.empty() || query_mask[i]) r.importance[j] += p[j];
    }
  }
  return r;
}

struct Case {
  int64_t lq, lk, d, dv, block_rows;
  double mask_density;  // < 0: no mask
  bool with_query_mask;
  // Instead of a random mask: causal, the first block of rows allows only keys 0-2 and the second block none, so
  // blocks stop at short spans, at none, and at the diagonal.
  bool blocked_causal = false;
};

void RunCase(const Case& c, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::vector<float> q(c.lq * c.d), k(c.lk * c.d), v(c.lk * c.dv);
  for (auto& x : q) x = normal(gen);
  for (auto& x : k) x = normal(gen);
  for (auto& x : v) x = normal(gen);
  std::vector<char> mask, query_mask;
  if (c.blocked_causal) {
    mask.resize(c.lq * c.lk);
    for (int64_t i = 0; i < c.lq; ++i)
      for (int64_t j = 0; j < c.lk; ++j)
        mask[i * c.lk + j] = j <= i + (c.lk - c.lq) && (i >= c.block_rows || j < 3) &&
                             (i < c.block_rows || i >= 2 * c.block_rows);
  } else if (c.mask_density >= 0) {
    mask.resize(c.lq * c.lk);
    for (auto& m : mask) m = uni(gen) < c.mask_density;
    if (c.lq > 1)
      for (int64_t j = 0; j < c.lk; ++j) mask[1 * c.lk + j] = 0;  // row 1 has no allowed key
  }
  if (c.with_query_mask) {
    query_mask.resize(c.lq);
    for (auto& m : query_mask) m = uni(gen) < 0.7;
  }
  std::unique_ptr<bool[]> mask_b(new bool[mask.size() + 1]), qmask_b(new bool[query_mask.size() + 1]);
  for (size_t i = 0; i < mask.size(); ++i) mask_b[i] = mask[i];
  for (size_t i = 0; i < query_mask.size(); ++i) qmask_b[i] = query_mask[i];

  spatten::AttentionHeadInputs in{q.data(), k.data(), v.data(), mask.empty() ? nullptr : mask_b.get(), c.lk, 1,
                                  query_mask.empty() ? nullptr : qmask_b.get()};
  const float scaling = 1.f / std::sqrt(float(std::max<int64_t>(c.d, 1)));
  const spatten::AttentionParams params{c.lq, c.lk, c.d, c.dv, scaling, c.block_rows};
  std::vector<float> out(c.lq * c.dv, NAN), importance(c.lk, NAN);
  spatten::AttentionScratch scratch;
  spatten::attention_with_importance_head(in, params, out.data(), importance.data(), scratch);

  const Naive want = NaiveAttention(q, k, v, mask, query_mask, c.lq, c.lk, c.d, c.dv, scaling);
  for (int64_t i = 0; i < c.lq * c.dv; ++i) ASSERT_NEAR(out[i], want.out[i], 1e-4) << "out " << i;
  for (int64_t j = 0; j < c.lk; ++j) ASSERT_NEAR(importance[j], want.importance[j], 1e-4 * c.lq) << "imp " << j;
  if (!mask.empty() && c.lq > 1 && !c.blocked_causal)
    for (int64_t t = 0; t < c.dv; ++t) EXPECT_EQ(out[1 * c.dv + t], 0.f);  // fully masked row
}

TEST(AttentionWithImportance, MatchesNaiveLoops) {
  const Case cases[] = {
      {7, 11, 8, 8, 3, -1, false},   {7, 11, 8, 5, 3, 0.6, true},  {64, 64, 16, 16, 64, 0.5, true},
      {100, 37, 8, 4, 32, 0.9, true}, {1, 50, 16, 16, 64, 0.4, false}, {33, 1, 4, 4, 16, 0.8, true},
      {5, 9, 1, 3, 2, -1, true},
  };
  unsigned seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "lq=" << c.lq << " lk=" << c.lk << " block=" << c.block_rows);
    RunCase(c, seed++);
  }
}

TEST(AttentionWithImportance, BlocksStopAtTheirLastAllowedKey) {
  // lq = lk (prefill) and lq < lk (a chunk after a cache), block sizes that do and do not divide lq.
  const Case cases[] = {{40, 40, 8, 8, 8, 0, true, true}, {50, 70, 8, 4, 16, 0, false, true},
                        {33, 33, 4, 4, 5, 0, true, true}};
  unsigned seed = 11;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "lq=" << c.lq << " lk=" << c.lk << " block=" << c.block_rows);
    RunCase(c, seed++);
  }
}

TEST(AttentionWithImportance, BlockSizeDoesNotChangeTheResult) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t lq = 45, lk = 30, d = 8;
  std::vector<float> q(lq * d), k(lk * d), v(lk * d);
  for (auto* vec : {&q, &k, &v})
    for (auto& x : *vec) x = normal(gen);
  spatten::AttentionHeadInputs in{q.data(), k.data(), v.data(), nullptr, 0, 0, nullptr};
  std::vector<float> out1(lq * d), imp1(lk), out2(lq * d), imp2(lk);
  spatten::AttentionScratch scratch;
  spatten::attention_with_importance_head<float>(in, {lq, lk, d, d, 0.5f, 1}, out1.data(), imp1.data(), scratch);
  spatten::attention_with_importance_head<float>(in, {lq, lk, d, d, 0.5f, 16}, out2.data(), imp2.data(), scratch);
  for (int64_t i = 0; i < lq * d; ++i) EXPECT_NEAR(out1[i], out2[i], 1e-5);
  // Only the GEMM rounding differs (a one-row block is a matrix-vector product).
  for (int64_t j = 0; j < lk; ++j) EXPECT_NEAR(imp1[j], imp2[j], 1e-5);
  // Every row's probabilities sum to 1: the importance totals lq.
  double total = 0;
  for (float x : imp1) total += x;
  EXPECT_NEAR(total, double(lq), 1e-3);
}

TEST(AttentionWithImportance, NoKeysGivesZerosAndEmptyImportance) {
  std::vector<float> q(3 * 4, 1.f), out(3 * 2, NAN);
  spatten::AttentionHeadInputs in{q.data(), nullptr, nullptr, nullptr, 0, 0, nullptr};
  spatten::AttentionScratch scratch;
  spatten::attention_with_importance_head<float>(in, {3, 0, 4, 2, 1.f, 64}, out.data(), nullptr, scratch);
  for (float x : out) EXPECT_EQ(x, 0.f);
}

TEST(AttentionWithImportance, LargeLogitsStayFinite) {
  const int64_t lq = 2, lk = 3, d = 1;
  std::vector<float> q = {300.f, -300.f}, k = {1.f, 2.f, 3.f}, v = {1.f, 2.f, 3.f}, out(lq), imp(lk);
  spatten::AttentionHeadInputs in{q.data(), k.data(), v.data(), nullptr, 0, 0, nullptr};
  spatten::AttentionScratch scratch;
  spatten::attention_with_importance_head<float>(in, {lq, lk, d, 1, 1.f, 64}, out.data(), imp.data(), scratch);
  EXPECT_NEAR(out[0], 3.f, 1e-5);
  EXPECT_NEAR(out[1], 1.f, 1e-5);
  EXPECT_NEAR(imp[0], 1.f, 1e-5);
  EXPECT_NEAR(imp[1], 0.f, 1e-5);
  EXPECT_NEAR(imp[2], 1.f, 1e-5);
}

}  // namespace
