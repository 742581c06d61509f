#include "topk_model.h"

namespace spatten::hwsim {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

QuickSelectResult quickselect_cycles(const std::vector<uint32_t>& values, uint64_t k, uint32_t p,
                                     PivotPolicy policy, uint64_t seed) {
  QuickSelectResult out;
  if (k == 0 || k >= values.size() || p == 0) return out;
  std::vector<uint32_t> seq = values, next;
  uint64_t target = k;  // how many of the largest in `seq` we still need
  while (true) {
    const uint64_t n = seq.size();
    out.cycles += (n + p - 1) / p + 3;
    out.elements += n;
    ++out.passes;
    const uint64_t idx = policy == PivotPolicy::kMiddle ? (n - 1) / 2 : splitmix64(seed ^ (out.passes * 0x100000001ull) ^ n) % n;
    const uint32_t pivot = seq[idx];
    uint64_t greater = 0, equal = 0;
    for (uint32_t v : seq) {
      greater += v > pivot;
      equal += v == pivot;
    }
    next.clear();
    if (greater > target) {
      for (uint32_t v : seq)
        if (v > pivot) next.push_back(v);
    } else if (greater + equal >= target) {
      return out;  // the pivot is the k-th largest (ties go to the lower positions in the output filter)
    } else {
      target -= greater + equal;
      for (uint32_t v : seq)
        if (v < pivot) next.push_back(v);
    }
    seq.swap(next);
  }
}

QuickSelectResult TopkLatencyModel::cycles(uint64_t n, uint64_t k) {
  if (k == 0 || k >= n) return {};
  const auto key = std::make_pair(n, k);
  const auto it = memo_.find(key);
  if (it != memo_.end()) return it->second;
  // The mean over a few random inputs: one sample of quick-select varies by +-30 % (pivot luck).
  constexpr int kTrials = 8;
  std::vector<uint32_t> data(n);
  QuickSelectResult sum;
  uint64_t state = 1;  // seed 1, as the RTL's latency model
  for (int trial = 0; trial < kTrials; ++trial) {
    for (auto& v : data) v = uint32_t(splitmix64(state++) >> 32);
    const auto r = quickselect_cycles(data, k, p_, PivotPolicy::kHashed, n * 31 + k + trial);
    sum.cycles += r.cycles;
    sum.passes += r.passes;
    sum.elements += r.elements;
  }
  const QuickSelectResult mean{(sum.cycles + kTrials / 2) / kTrials, (sum.passes + kTrials / 2) / kTrials,
                               (sum.elements + kTrials / 2) / kTrials};
  memo_.emplace(key, mean);
  return mean;
}

}  // namespace spatten::hwsim
