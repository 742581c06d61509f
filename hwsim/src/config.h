// Hardware presets: parameters of every component plus the energy table, read from YAML.
// A preset may name a `base` preset and override some of its fields; `dense: true` runs the trace unpruned.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace spatten::hwsim {

struct DramTiming {  // HBM2 command-clock cycles (1 ns at 1 GHz)
  uint32_t tRCD, tRP, tRAS, tRC, tCL, tCCD_S, tCCD_L, tRRD_S, tRRD_L, tFAW, tRTP, tREFI, tRFC;
};

struct DramConfig {
  uint32_t channels;
  uint32_t pseudo_channels;      // per channel, each with its own banks and data bus
  uint32_t bank_groups;          // per pseudo-channel
  uint32_t banks_per_group;
  uint32_t row_bytes;            // row buffer per pseudo-channel bank
  uint32_t burst_cycles;         // data-bus cycles of one 32-byte transaction on a pseudo-channel
  uint32_t queue_runs;           // controller queue depth, in row-runs
  bool refresh;
  DramTiming timing;
};

struct EnergyTable {  // pJ per event unless named _mw
  double mac_12b, mac_overhead;
  double softmax_exp, softmax_elem_misc;
  double topk_element;
  double kv_buffer_line_read, kv_buffer_line_write;
  double fifo_read_512b, fifo_write_512b;
  double dram_read_64B, dram_write_64B, dram_activate, dram_refresh;
  double dram_active_standby_mw, dram_precharge_standby_mw;  // per channel
  double leakage_logic_mw, leakage_sram_mw;
};

struct HwConfig {
  std::string name;
  std::string description;
  bool dense = false;  // run every trace row unpruned (keys = values = kv_len, all heads, 12-bit, no refetch)
  double clock_ghz;
  uint32_t multipliers_per_array;  // Q.K and P.V arrays each
  uint32_t datapath_bits;          // width of unquantized K/V/Q
  uint32_t buffer_lines;           // key buffer = value buffer = lines x multipliers x datapath_bits
  uint32_t max_live_requests;      // BufferManager allocations
  uint32_t request_fifo_depth;
  uint32_t fetch_channels;         // crossbar masters
  uint32_t transaction_bytes;
  uint32_t topk_parallelism;       // comparators of the local-value top-k engine
  uint32_t cascade_topk_parallelism;  // comparators of the global token/head top-k
  // Local top-k engine organisation. true: two pipelined stages (the first quick-select pass streams with the
  // probabilities, the refinement passes of one head overlap the next head's Q.K/softmax); false: the RTL
  // QuickSelect FSM, one row at a time (Fill -> Run -> AfterRun, held until the output filter drains).
  bool topk_pipelined = true;
  uint32_t qk_latency, pv_latency, softmax_latency, crossbar_latency;
  uint32_t importance_lanes;       // importance additions per cycle
  // GQA (not in SpAtten, which predates it): query heads that share a K/V head form one request, so their
  // K/V are fetched once (trace meta heads / kv_heads). false: every query head fetches its own copy.
  bool gqa_shared_kv = true;
  DramConfig dram;
  EnergyTable energy;

  // Derived
  uint32_t lanes() const { return multipliers_per_array / 64 ? multipliers_per_array / 64 : 1; }
  uint64_t buffer_key_slots() const { return uint64_t(buffer_lines) * lanes(); }
  double peak_dram_bytes_per_cycle() const {
    return double(dram.channels) * dram.pseudo_channels * transaction_bytes / dram.burst_cycles;
  }
  double peak_macs_per_cycle() const { return 2.0 * multipliers_per_array; }
};

// Directories searched for `<name>.yaml` presets: the ones given, then SPATTEN_HWSIM_PRESET_DIR if set,
// then the directory compiled in (the source tree's hwsim/presets).
std::vector<std::string> default_preset_dirs();

// Loads a preset by name (matching the `name:` field, e.g. "spatten-1/8") from the directories.
// `overrides` is YAML text (a mapping such as "hardware: {topk_parallelism: 1}") merged over the preset.
HwConfig load_preset(const std::string& name, const std::vector<std::string>& dirs, const std::string& overrides = "");
// Loads a preset from a YAML file; `base:` names are resolved in the file's directory and `dirs`.
HwConfig load_preset_file(const std::string& path, const std::vector<std::string>& dirs = {},
                          const std::string& overrides = "");
// Names of all presets found in the directories, sorted.
std::vector<std::string> list_presets(const std::vector<std::string>& dirs);

}  // namespace spatten::hwsim
