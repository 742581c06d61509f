// Backward kernels against central finite differences of the forward kernels, in double.
#include "kernels/attention_backward.h"

#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <vector>

#include "kernels/attention_importance.h"
#include "kernels/local_value.h"

namespace {

constexpr int64_t kLq = 3, kLk = 4, kD = 2, kDv = 2;
constexpr double kScaling = 0.8, kStep = 1e-6;

std::vector<double> Random(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal;
  std::vector<double> x(n);
  for (double& e : x) e = normal(gen);
  return x;
}

struct Problem {
  std::vector<double> q = Random(kLq * kD, 1), k = Random(kLk * kD, 2), v = Random(kLk * kDv, 3);
  std::vector<double> w_out = Random(kLq * kDv, 4), w_probs = Random(kLq * kLk, 5);
  // Row 1 may not attend key 2.
  bool mask[kLq * kLk] = {true, true, true, true, true, true, false, true, true, true, true, true};

  spatten::AttentionHeadInputsT<double> inputs() const {
    return {q.data(), k.data(), v.data(), mask, kLk, 1, nullptr};
  }

  // L = <w_out, P v> + <w_probs, P> with P the masked softmax of kScaling * q k^T.
  double Loss() const {
    std::vector<double> probs(kLq * kLk), scratch;
    EXPECT_TRUE(spatten::attention_probs_head(inputs(), {kLq, kLk, kD, kDv, kScaling, kLq}, probs.data(), scratch));
    double loss = 0;
    for (int64_t i = 0; i < kLq; ++i) {
      for (int64_t j = 0; j < kLk; ++j) {
        loss += w_probs[i * kLk + j] * probs[i * kLk + j];
        for (int64_t c = 0; c < kDv; ++c) loss += w_out[i * kDv + c] * probs[i * kLk + j] * v[j * kDv + c];
      }
    }
    return loss;
  }

  double NumericGrad(std::vector<double>& x, size_t i) {
    const double saved = x[i];
    x[i] = saved + kStep;
    const double up = Loss();
    x[i] = saved - kStep;
    const double down = Loss();
    x[i] = saved;
    return (up - down) / (2 * kStep);
  }
};

TEST(AttentionBackward, MatchesFiniteDifferences) {
  Problem p;
  std::vector<double> probs(kLq * kLk), scratch_q;
  ASSERT_TRUE(spatten::attention_probs_head(p.inputs(), {kLq, kLk, kD, kDv, kScaling, kLq}, probs.data(), scratch_q));
  spatten::AttentionGradInputs<double> in{};
  in.q = p.q.data();
  in.keys = p.k.data();
  in.v = p.v.data();
  in.probs = probs.data();
  in.grad_out = p.w_out.data();
  in.grad_probs = p.w_probs.data();
  std::vector<double> gq(kLq * kD), gk(kLk * kD), gv(kLk * kDv);
  spatten::AttentionGradScratch<double> scratch;
  spatten::attention_backward_head(in, {kLq, kLk, kD, kDv}, kScaling, gq.data(), gk.data(), gv.data(), scratch);
  for (size_t i = 0; i < gq.size(); ++i) EXPECT_NEAR(gq[i], p.NumericGrad(p.q, i), 1e-7) << "q " << i;
  for (size_t i = 0; i < gk.size(); ++i) EXPECT_NEAR(gk[i], p.NumericGrad(p.k, i), 1e-7) << "k " << i;
  for (size_t i = 0; i < gv.size(); ++i) EXPECT_NEAR(gv[i], p.NumericGrad(p.v, i), 1e-7) << "v " << i;
  // Key 2 is masked for row 1 only: row 1's probabilities there are 0, so the key still gets gradient from rows
  // 0 and 2, but row 1 of dS has no entry for it (checked through the finite differences above).
}

TEST(AttentionBackward, AlternativeKeysApplyToTheirRowsOnly) {
  // grad_q of a row with row_alt uses keys_alt; the others use keys. With keys_alt = 2 * keys the alt row's
  // gradient doubles.
  Problem p;
  std::vector<double> probs(kLq * kLk), scratch_q, k2(p.k);
  for (double& e : k2) e *= 2;
  ASSERT_TRUE(spatten::attention_probs_head(p.inputs(), {kLq, kLk, kD, kDv, kScaling, kLq}, probs.data(), scratch_q));
  const bool alt[kLq] = {false, true, false};
  spatten::AttentionGradInputs<double> in{p.q.data(), p.k.data(), nullptr, nullptr, p.v.data(), probs.data(),
                                          p.w_out.data(), nullptr};
  std::vector<double> gq(kLq * kD), gq_alt(kLq * kD), gk(kLk * kD), gv(kLk * kDv);
  spatten::AttentionGradScratch<double> scratch;
  spatten::attention_backward_head(in, {kLq, kLk, kD, kDv}, kScaling, gq.data(), gk.data(), gv.data(), scratch);
  in.keys_alt = k2.data();
  in.row_alt = alt;
  spatten::attention_backward_head(in, {kLq, kLk, kD, kDv}, kScaling, gq_alt.data(), gk.data(), gv.data(), scratch);
  for (int64_t i = 0; i < kLq; ++i)
    for (int64_t c = 0; c < kD; ++c)
      EXPECT_NEAR(gq_alt[i * kD + c], (alt[i] ? 2 : 1) * gq[i * kD + c], 1e-12);
}

TEST(LocalValueBackward, HandComputed) {
  // lq = 1, lk = 3, d = 1, k = 2: kept {0, 2}; out = p0 v0 + p2 v2.
  const double probs[] = {0.5, 0.1, 0.4}, v[] = {1.0, 2.0, 3.0}, grad_out[] = {2.0};
  const int64_t kept[] = {0, 2};
  double grad_probs[3], grad_v[3];
  spatten::local_value_attention_backward_head(probs, v, kept, grad_out, 1, 3, 1, 2, grad_probs, grad_v);
  EXPECT_DOUBLE_EQ(grad_probs[0], 2.0);
  EXPECT_DOUBLE_EQ(grad_probs[1], 0.0);
  EXPECT_DOUBLE_EQ(grad_probs[2], 6.0);
  EXPECT_DOUBLE_EQ(grad_v[0], 1.0);
  EXPECT_DOUBLE_EQ(grad_v[1], 0.0);
  EXPECT_DOUBLE_EQ(grad_v[2], 0.8);
}

TEST(AttentionForward, NonFiniteAllowedLogitIsReported) {
  Problem p;
  std::vector<double> out(kLq * kDv), importance(kLk);
  spatten::AttentionScratchT<double> scratch;
  const spatten::AttentionParamsT<double> params{kLq, kLk, kD, kDv, kScaling, 2};
  EXPECT_TRUE(spatten::attention_with_importance_head(p.inputs(), params, out.data(), importance.data(), scratch));
  p.k[2 * kD] = std::numeric_limits<double>::quiet_NaN();  // key 2: masked for row 1 only, allowed for rows 0, 2
  EXPECT_FALSE(spatten::attention_with_importance_head(p.inputs(), params, out.data(), importance.data(), scratch));
}

}  // namespace
