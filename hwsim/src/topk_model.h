// Cycle model of the quick-select top-k engine (QuickSelect.scala / sim/TopKLatencyModel.scala): every pass
// streams the current candidates past P comparators against a pivot, costing ceil(n/P) + 3 cycles, and keeps
// the side that holds the k-th largest, until the k-th largest is known. The order-preserving output filter
// streams behind the consumer (the V fetch) and adds no cycles of its own.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace spatten::hwsim {

enum class PivotPolicy { kHashed, kMiddle };

struct QuickSelectResult {
  uint64_t cycles = 0;
  uint32_t passes = 0;
  uint64_t elements = 0;  // elements streamed through the comparators over all passes
};

// Runs quick-select for the k largest of `values` with parallelism p. k == 0 or k >= n costs nothing.
QuickSelectResult quickselect_cycles(const std::vector<uint32_t>& values, uint64_t k, uint32_t p,
                                     PivotPolicy policy = PivotPolicy::kHashed, uint64_t seed = 1);

// The same on pseudo-random data of size n (what the RTL's latency model does), memoized by (n, k):
// deterministic, and cheap for traces that repeat row sizes.
class TopkLatencyModel {
 public:
  explicit TopkLatencyModel(uint32_t parallelism) : p_(parallelism) {}
  QuickSelectResult cycles(uint64_t n, uint64_t k);
  uint32_t parallelism() const { return p_; }

 private:
  uint32_t p_;
  std::map<std::pair<uint64_t, uint64_t>, QuickSelectResult> memo_;
};

uint64_t splitmix64(uint64_t x);

}  // namespace spatten::hwsim
