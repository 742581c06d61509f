// HBM2 channel model and the address map that turns a gather of vectors into row-runs.
//
// Granularity: the controller works on *row-runs* (consecutive 32-byte transactions of one fetch that fall in
// the same bank and row of one channel). A run is one event; inside it every ACT/PRE/RD command still gets its
// own cycle, checked against every timing constraint, so bandwidth, row hits and timing stay command-exact
// while the event count stays near (bytes / row size).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "config.h"
#include "event_queue.h"

namespace spatten::hwsim {

constexpr int kMaxPseudoChannels = 2;

struct Run {
  uint32_t job = 0;
  uint32_t bank = 0;  // bank_group * banks_per_group + bank
  uint64_t row = 0;
  std::array<uint32_t, kMaxPseudoChannels> count{};  // transactions per pseudo-channel
  bool write = false;  // a write (attention output, KV append): same column timing, counted as written
  uint32_t total() const { return count[0] + count[1]; }
};

// RoBaRaCoCh-style interleaving, from the least significant bit: 32-B offset | channel | pseudo-channel |
// column | bank group | bank | row. Consecutive transactions spread over all channels; a channel sees
// consecutive columns of one row, alternating pseudo-channels.
class AddressMap {
 public:
  explicit AddressMap(const HwConfig& cfg);
  struct Location {
    uint32_t channel, pc, bank;
    uint64_t row;
  };
  Location locate(uint64_t unit) const;  // unit = address / transaction_bytes
  uint32_t channels() const { return channels_; }
  // Consecutive transactions that land on distinct (channel, pseudo-channel) pairs before the column advances.
  uint64_t interleave() const { return uint64_t(1) << (ch_bits_ + pc_bits_); }

 private:
  uint32_t channels_;
  uint32_t ch_bits_, pc_bits_, col_bits_, bg_bits_, bank_bits_;  // all sizes are powers of two
};

// A gather: `count` (<= `total`) of `total` vectors of `vector_bits` each, starting at byte `base`. Kept vectors
// are spread evenly over the region (the trace records how many, not which), each nudged back so the gather's
// transactions go round the channels in turn (append_runs). When a vector is not a whole number of
// transactions (6-bit x 64 = 48 B), vectors are fetched in fused pairs as in the RTL, one 96-B index each, so
// n vectors cost ceil(n * bytes / 32) transactions (a fused 6-bit pair = 3).
struct Gather {
  uint64_t base;
  uint64_t count;
  uint64_t total;
  uint64_t vector_bits;
};

// Transactions a gather needs (8-bit x 64 = 2, 4-bit x 64 = 1, 12-bit x 64 = 3, fused 6-bit pair = 3).
uint64_t gather_transactions(const Gather& g, uint32_t transaction_bytes);

// Appends the gather's row-runs, per channel, in address order.
void append_runs(const AddressMap& map, const Gather& g, uint32_t transaction_bytes, uint32_t job,
                 std::vector<std::vector<Run>>& per_channel);

struct DramCommand {
  enum Type : uint8_t { kActivate, kPrecharge, kRead, kRefresh, kWrite } type;
  Cycle time;
  uint8_t pc;
  uint16_t bank;
  uint64_t row;
};

struct ChannelStats {
  uint64_t bytes_read = 0, bytes_written = 0, transactions = 0, row_hits = 0, row_misses = 0, row_conflicts = 0, activates = 0, refreshes = 0;
  double data_bus_cycles = 0;  // averaged over the pseudo-channels (busy fraction = this / cycles)
  double active_standby_cycles = 0;
};

// Receives where a run's data lands: called when the controller schedules the run (times are in the future).
class RunSink {
 public:
  virtual ~RunSink() = default;
  virtual void run_scheduled(const Run& run, Cycle first_data, Cycle last_data) = 0;
};

class HbmChannel : public Component {
 public:
  enum Kind : uint32_t { kArrive = 0, kTry = 1 };
  HbmChannel(const std::string& name, EventQueue& q, const HwConfig& cfg, RunSink* sink);

  Link<Run>& input() { return input_; }
  // Accounts refreshes and standby up to `end` (call once after the run).
  void finish(Cycle end);
  const ChannelStats& stats() const { return stats_; }
  void record_commands(bool on) { record_ = on; }
  const std::vector<DramCommand>& commands() const { return log_; }
  Cycle last_data() const { return last_data_; }
  void handle(uint32_t kind, uint64_t arg) override;

 private:
  struct Bank {
    int64_t open_row = -1;
    int64_t t_act = INT64_MIN / 4, ready_act = 0, col_ready = 0, last_read = INT64_MIN / 4;
  };
  struct Pseudo {
    std::vector<Bank> banks;
    int64_t last_read = INT64_MIN / 4;
    uint32_t last_read_group = UINT32_MAX;
    std::array<int64_t, 4> act_window{INT64_MIN / 4, INT64_MIN / 4, INT64_MIN / 4, INT64_MIN / 4};
    uint32_t act_index = 0;
    int64_t last_act = INT64_MIN / 4;
    uint32_t last_act_group = UINT32_MAX;
  };
  void try_pick();
  size_t pick_fr_fcfs() const;
  void serve(const Run& run, Cycle arrival);
  void refresh_until(int64_t t);
  void log(DramCommand::Type type, int64_t time, uint32_t pc, uint32_t bank, uint64_t row);

  const HwConfig& cfg_;
  const DramTiming& t_;
  RunSink* sink_;
  Link<Run> input_;
  std::vector<Pseudo> pcs_;
  ChannelStats stats_;
  int64_t next_pick_ = 0;
  int64_t next_refresh_;
  bool try_pending_ = false;
  bool all_closed_ = true;
  int64_t active_since_ = 0;
  Cycle last_data_ = 0;
  bool record_ = false;
  std::vector<DramCommand> log_;
};

}  // namespace spatten::hwsim
