#include "kernels/progressive_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
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

namespace {

// Naive loops over the contract: the independent reference for random heads below.
void NaiveProgressive(const std::vector<float>& q, const std::vector<int16_t>& msb, const std::vector<int16_t>& lsb,
                      const std::vector<float>& scale, const std::vector<float>& v, const std::vector<char>& mask,
                      const spatten::ProgressiveParams& p, std::vector<float>& out, std::vector<float>& probs,
                      std::vector<char>& refetch) {
  const int step = 1 << p.lsb_bits, mid = p.lsb_bits > 0 ? step / 2 : 0;
  auto row_probs = [&](int64_t i, bool with_lsb, float* dst) {
    float mx = -INFINITY;
    bool any = false;
    for (int64_t j = 0; j < p.lk; ++j) {
      if (!mask[i * p.lk + j]) continue;
      double dot = 0;
      for (int64_t t = 0; t < p.d; ++t) {
        const int low = with_lsb ? lsb[j * p.d + t] : mid;
        dot += q[i * p.d + t] * static_cast<float>(msb[j * p.d + t] * step + low) * scale[j];
      }
      dst[j] = static_cast<float>(dot) * p.scaling;
      mx = std::max(mx, dst[j]);
      any = true;
    }
    double sum = 0;
    for (int64_t j = 0; j < p.lk; ++j) sum += mask[i * p.lk + j] ? std::exp(dst[j] - mx) : 0.0;
    float top = 0;
    for (int64_t j = 0; j < p.lk; ++j) {
      dst[j] = mask[i * p.lk + j] ? static_cast<float>(std::exp(dst[j] - mx) / sum) : 0.f;
      top = std::max(top, dst[j]);
    }
    return any ? top : -1.f;
  };
  for (int64_t i = 0; i < p.lq; ++i) {
    float* row = probs.data() + i * p.lk;
    const float top = row_probs(i, false, row);
    refetch[i] = top >= 0 && top < p.threshold;
    if (refetch[i]) row_probs(i, true, row);
    for (int64_t c = 0; c < p.dv; ++c) {
      double acc = 0;
      for (int64_t j = 0; j < p.lk; ++j) acc += row[j] * v[j * p.dv + c];
      out[i * p.dv + c] = static_cast<float>(acc);
    }
  }
}

TEST(ProgressiveAttention, RandomHeadsMatchNaiveLoops) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> small(-40, 40), low(0, 15), coin(0, 3);
  int64_t rows = 0, refetched = 0;
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t lq = 1 + trial % 7, lk = 1 + (trial * 5) % 23, d = 1 + trial % 9, dv = 1 + trial % 4;
    const spatten::ProgressiveParams p{lq, lk, d, dv, 0.05f * static_cast<float>(trial % 10), 4, 0.3f};
    std::vector<float> q(lq * d), v(lk * dv), scale(lk);
    std::vector<int16_t> msb(lk * d), lsb(lk * d);
    std::vector<char> mask(lq * lk);
    for (auto& x : q) x = normal(rng);
    for (auto& x : v) x = normal(rng);
    for (auto& x : scale) x = 0.01f + std::fabs(normal(rng)) * 0.05f;
    for (auto& x : msb) x = static_cast<int16_t>(small(rng));
    for (auto& x : lsb) x = static_cast<int16_t>(low(rng));
    for (auto& x : mask) x = coin(rng) != 0;
    // The kernel reads the mask through strides: store it transposed ([lk, lq]) to exercise them.
    std::unique_ptr<bool[]> mask_t(new bool[lq * lk]);
    for (int64_t i = 0; i < lq; ++i)
      for (int64_t j = 0; j < lk; ++j) mask_t[j * lq + i] = mask[i * lk + j];
    const spatten::ProgressiveHeadInputs in{q.data(), msb.data(), lsb.data(), scale.data(), true, v.data(),
                                            mask_t.get(), 1, lq};
    std::vector<float> out(lq * dv), probs(lq * lk), want_out(lq * dv), want_probs(lq * lk);
    std::unique_ptr<bool[]> refetch(new bool[lq]);
    std::vector<char> want_refetch(lq);
    spatten::ProgressiveScratch scratch;
    spatten::progressive_attention_head(in, p, out.data(), probs.data(), refetch.get(), scratch);
    NaiveProgressive(q, msb, lsb, scale, v, mask, p, want_out, want_probs, want_refetch);
    for (int64_t i = 0; i < lq; ++i) EXPECT_EQ(refetch[i], want_refetch[i] != 0) << "trial " << trial << " row " << i;
    rows += lq;
    for (int64_t i = 0; i < lq; ++i) refetched += refetch[i];
    for (int64_t t = 0; t < lq * lk; ++t) EXPECT_NEAR(probs[t], want_probs[t], 1e-5) << "trial " << trial;
    for (int64_t t = 0; t < lq * dv; ++t) EXPECT_NEAR(out[t], want_out[t], 1e-4) << "trial " << trial;
  }
  // Both branches of the refetch decision were exercised.
  EXPECT_GT(refetched, 0);
  EXPECT_LT(refetched, rows);
}

}  // namespace
