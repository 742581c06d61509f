#include "kernels/topk.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>

namespace spatten {
namespace {

// Radix select digit plans: short rows use 8-bit digits (a 1 KiB histogram is cheap to clear and scan); long
// rows use 11-bit digits, so fewer keys survive each level.
struct RadixPlan {
  int levels;
  int shift[4];
  uint32_t mask[4];
};
constexpr RadixPlan kNarrowDigits{4, {24, 16, 8, 0}, {0xffu, 0xffu, 0xffu, 0xffu}};
constexpr RadixPlan kWideDigits{3, {21, 10, 0, 0}, {0x7ffu, 0x7ffu, 0x3ffu, 0u}};
constexpr int64_t kWideDigitsMinLength = 1024;
// A radix level whose candidate set is this small finishes with std::nth_element instead of another pass.
constexpr int64_t kSmallCandidateSet = 16;

// Order-preserving map from float to uint32 (a larger float gives a larger key). -0 is folded into +0 first so
// that the two compare equal, as they do as floats.
inline uint32_t sortable_key(float x, uint32_t& nan_seen) {
  x += 0.0f;
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  nan_seen |= static_cast<uint32_t>((bits & 0x7fffffffu) > 0x7f800000u);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// The k-th largest key, how many keys equal to it the row holds, and how many of those the top-k takes (the
// rest of the ties are dropped).
struct Threshold {
  uint32_t key;
  int64_t ties_total;
  int64_t ties_taken;
};

// Selection among `cand[0, count)` of the rank-th largest (1-based) by nth_element.
Threshold select_by_nth_element(uint32_t* cand, int64_t count, int64_t rank) {
  std::nth_element(cand, cand + (rank - 1), cand + count, std::greater<uint32_t>());
  const uint32_t kth = cand[rank - 1];
  // Everything before rank-1 is >= kth; the ones equal to it are ties the top-k also takes.
  const int64_t equal_before = std::count(cand, cand + (rank - 1), kth);
  return {kth, std::count(cand, cand + count, kth), equal_before + 1};
}

// Radix select from the most significant digit down. `hist0` is the top-digit histogram of keys[0, n), already
// built while the keys were made; `cand` receives the keys still in play.
Threshold select_by_radix(const uint32_t* keys, int64_t n, int64_t k, const RadixPlan& plan,
                          const std::array<uint32_t, 2048>& hist0, std::vector<uint32_t>& cand) {
  int64_t rank = k;  // rank of the wanted key among the keys still in play
  std::array<uint32_t, 2048> hist;
  const uint32_t* in_play = keys;
  int64_t count = n;
  uint32_t prefix = 0;
  cand.resize(static_cast<size_t>(n));
  for (int level = 0; level < plan.levels; ++level) {
    const int shift = plan.shift[level];
    const uint32_t mask = plan.mask[level];
    if (level == 0) {
      std::copy_n(hist0.begin(), mask + 1, hist.begin());
    } else {
      std::fill_n(hist.begin(), mask + 1, 0u);
      for (int64_t i = 0; i < count; ++i) ++hist[(in_play[i] >> shift) & mask];
    }
    uint32_t bin = mask;
    while (static_cast<int64_t>(hist[bin]) < rank) rank -= hist[bin--];
    prefix |= bin << shift;
    // At the last level the bin is one exact key: the row holds hist[bin] copies and the top-k takes `rank`.
    if (level == plan.levels - 1) return {prefix, hist[bin], rank};
    // Keep the keys whose digits so far match the prefix (branch-free compaction; in place after level 0).
    const uint32_t want = prefix >> shift;
    int64_t w = 0;
    for (int64_t i = 0; i < count; ++i) {
      const uint32_t key = in_play[i];
      cand[w] = key;
      w += (key >> shift) == want;
    }
    in_play = cand.data();
    count = w;
    if (count <= kSmallCandidateSet) return select_by_nth_element(cand.data(), count, rank);
  }
  return {prefix, 0, 0};  // unreachable: the last level returns
}

}  // namespace

bool topk_indices_row(const float* scores, int64_t n, int64_t k, int64_t* out, TopkScratch& scratch) {
  uint32_t nan_seen = 0;
  if (k <= 0 || k >= n) {
    for (int64_t i = 0; i < n; ++i) (void)sortable_key(scores[i], nan_seen);
    if (nan_seen) return false;
    for (int64_t i = 0; i < k; ++i) out[i] = i;
    return true;
  }
  scratch.keys.resize(static_cast<size_t>(n));
  uint32_t* keys = scratch.keys.data();
  const RadixPlan& plan = n >= kWideDigitsMinLength ? kWideDigits : kNarrowDigits;
  // Make the keys, check NaN and build the top-digit histogram in the same pass over the row.
  std::array<uint32_t, 2048> hist0;
  std::fill_n(hist0.begin(), plan.mask[0] + 1, 0u);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t key = sortable_key(scores[i], nan_seen);
    keys[i] = key;
    ++hist0[key >> plan.shift[0]];
  }
  if (nan_seen) return false;
  const Threshold kth = select_by_radix(keys, n, k, plan, hist0, scratch.candidates);
  // Order-preserving filter, without data-dependent branches; the write at out[w] is always in bounds because the
  // loop stops at w == k.
  int64_t w = 0;
  if (kth.ties_taken == kth.ties_total) {
    // Every copy of the threshold is kept (the usual case): the top-k is exactly the keys >= threshold.
    for (int64_t i = 0; i < n; ++i) {
      out[w] = i;
      w += keys[i] >= kth.key;
      if (w == k) break;
    }
    return true;
  }
  // Partial ties: everything above the threshold, and the first `ties_taken` copies of it.
  int64_t ties_left = kth.ties_taken;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t key = keys[i];
    const int64_t equal = key == kth.key;
    const int64_t take = (key > kth.key) | (equal & (ties_left > 0));
    out[w] = i;
    w += take;
    ties_left -= equal & take;
    if (w == k) break;
  }
  return true;
}

bool topk_indices(const float* scores, int64_t rows, int64_t n, int64_t k, int64_t* out) {
  TopkScratch scratch;
  bool ok = true;
  for (int64_t r = 0; r < rows; ++r) ok &= topk_indices_row(scores + r * n, n, k, out + r * k, scratch);
  return ok;
}

bool has_nan(const float* scores, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (std::isnan(scores[i])) return true;
  return false;
}

}  // namespace spatten
