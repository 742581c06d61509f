// What a simulation produces: totals, per-layer and per-channel statistics, busy fractions, energy.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dram.h"

namespace spatten::hwsim {

struct LayerStats {
  uint32_t layer = 0;
  double cycles = 0;           // share of the total: each (stage, step, layer) is charged from the previous one's end
  uint64_t requests = 0;       // kept heads (x steps)
  uint64_t keys_fetched = 0, values_fetched = 0, lsb_refetch_rows = 0;
  uint64_t dram_bytes_read = 0;
  double macs = 0;
};

struct SequenceStats {  // one sequence of a batch (trace v2 `sequence`)
  uint32_t sequence = 0;
  uint64_t cycles = 0;  // when its last layer finished
  uint64_t requests = 0, dram_bytes_read = 0;
};

struct EnergyBreakdown {  // joules
  std::map<std::string, double> parts;
  double total() const {
    double s = 0;
    for (const auto& kv : parts) s += kv.second;
    return s;
  }
};

struct Report {
  std::string preset, mode;  // mode: "as traced" or "dense"
  std::string trace_source;
  double clock_hz = 0;
  Cycle cycles = 0;
  double seconds = 0;
  uint64_t requests = 0, events = 0;
  uint64_t dram_bytes_read = 0, dram_bytes_written = 0;
  uint64_t dram_bytes_refetched = 0;  // part of the bytes read: K/V streamed again because they exceed the buffers
  double macs = 0, useful_macs = 0, flops = 0, flops_per_second = 0;
  double peak_dram_bytes_per_second = 0, peak_macs_per_second = 0;
  std::vector<ChannelStats> channels;
  std::vector<LayerStats> layers;
  std::vector<SequenceStats> sequences;
  std::map<std::string, double> busy_fraction;
  EnergyBreakdown energy;
  double energy_joules = 0, power_watts = 0;
  std::shared_ptr<Report> dense;  // the same hardware running the trace unpruned

  uint64_t dram_bytes() const { return dram_bytes_read + dram_bytes_written; }
  uint64_t row_hits() const;
  uint64_t row_misses() const;
  std::string to_json() const;
};

}  // namespace spatten::hwsim
