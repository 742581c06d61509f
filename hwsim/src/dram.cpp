#include "dram.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "errors.h"

namespace spatten::hwsim {

namespace {
uint32_t log2_exact(uint64_t v, const char* what) {
  uint32_t b = 0;
  while ((uint64_t(1) << b) < v) ++b;
  if ((uint64_t(1) << b) != v) throw ConfigError(std::string(what) + " must be a power of two");
  return b;
}
}  // namespace

AddressMap::AddressMap(const HwConfig& cfg)
    : channels_(cfg.dram.channels),
      ch_bits_(log2_exact(cfg.dram.channels, "dram.channels")),
      pc_bits_(log2_exact(cfg.dram.pseudo_channels, "dram.pseudo_channels")),
      col_bits_(log2_exact(cfg.dram.row_bytes / cfg.transaction_bytes, "dram.row_bytes / transaction_bytes")),
      bg_bits_(log2_exact(cfg.dram.bank_groups, "dram.bank_groups")),
      bank_bits_(log2_exact(cfg.dram.banks_per_group, "dram.banks_per_group")) {
  if (cfg.dram.pseudo_channels > kMaxPseudoChannels) throw ConfigError("dram.pseudo_channels must be 1 or 2");
}

AddressMap::Location AddressMap::locate(uint64_t unit) const {
  Location loc;
  loc.channel = uint32_t(unit & ((1u << ch_bits_) - 1));
  unit >>= ch_bits_;
  loc.pc = uint32_t(unit & ((1u << pc_bits_) - 1));
  unit >>= pc_bits_ + col_bits_;  // the column within the row is irrelevant once the row is open
  const uint32_t group = uint32_t(unit & ((1u << bg_bits_) - 1));
  unit >>= bg_bits_;
  const uint32_t bank = uint32_t(unit & ((1u << bank_bits_) - 1));
  loc.bank = (group << bank_bits_) | bank;
  loc.row = unit >> bank_bits_;
  return loc;
}

uint64_t gather_transactions(const Gather& g, uint32_t tx) {
  const uint64_t bits = g.count * g.vector_bits;
  return (bits + 8ull * tx - 1) / (8ull * tx);
}

void append_runs(const AddressMap& map, const Gather& g, uint32_t tx, uint32_t job,
                 std::vector<std::vector<Run>>& per_channel) {
  if (g.count == 0) return;
  const uint64_t base_unit = g.base / tx;
  auto add = [&](uint64_t unit) {
    const auto loc = map.locate(base_unit + unit);
    auto& runs = per_channel[loc.channel];
    if (runs.empty() || runs.back().job != job || runs.back().bank != loc.bank || runs.back().row != loc.row) {
      Run r;
      r.job = job;
      r.bank = loc.bank;
      r.row = loc.row;
      runs.push_back(r);
    }
    ++runs.back().count[loc.pc];
  };
  // Fused groups (MatrixFetcher, spatten-original.md section 4.2.4): vectors that are not a whole number of
  // transactions are fetched `fused` at a time as one index of `units` consecutive transactions, at
  // addr = index x (fused x vector bytes) + base (a 6-bit x 64 pair = 96 B = 3 transactions); a last, partial
  // group takes only the transactions its vectors cover.
  const uint64_t bits_per_tx = 8ull * tx;
  const uint64_t fused = bits_per_tx / std::gcd(g.vector_bits, bits_per_tx);
  const uint64_t units = fused * g.vector_bits / bits_per_tx;
  const uint64_t groups = (g.count + fused - 1) / fused;
  const uint64_t slots = (g.total + fused - 1) / fused;
  // Which indices: the trace says how many, not which. Group p sits at the last index at or below its evenly
  // spread position p x slots / groups whose first transaction falls on the p-th interleave slot (channel,
  // pseudo-channel) in turn, so the transactions walk the channels round-robin as a dense stream does while
  // the rows stay evenly spread. An exact stride would resonate with the power-of-two interleave and pile
  // transactions onto a few channels, differently for every width (docs/hwsim.md, "Bit widths").
  const uint64_t interleave = map.interleave();
  const uint64_t period = interleave / std::gcd(units, interleave);
  std::vector<std::pair<uint64_t, uint64_t>> placed(groups);  // (index, group)
  for (uint64_t p = 0; p < groups; ++p) {
    const uint64_t even = p * slots / groups;  // >= p because slots >= groups
    placed[p] = {even - (even - p) % period, p};
  }
  std::sort(placed.begin(), placed.end());  // address order
  for (const auto& [idx, p] : placed) {
    const uint64_t vectors = std::min(fused, g.count - p * fused);
    const uint64_t n = (vectors * g.vector_bits + bits_per_tx - 1) / bits_per_tx;
    for (uint64_t u = 0; u < n; ++u) add(idx * units + u);
  }
}

HbmChannel::HbmChannel(const std::string& name, EventQueue& q, const HwConfig& cfg, RunSink* sink)
    : Component(name, q),
      cfg_(cfg),
      t_(cfg.dram.timing),
      sink_(sink),
      input_(q, cfg.dram.queue_runs, cfg.crossbar_latency, this, kArrive),
      pcs_(cfg.dram.pseudo_channels),
      next_refresh_(cfg.dram.timing.tREFI) {
  for (auto& p : pcs_) p.banks.resize(size_t(cfg.dram.bank_groups) * cfg.dram.banks_per_group);
}

void HbmChannel::log(DramCommand::Type type, int64_t time, uint32_t pc, uint32_t bank, uint64_t row) {
  if (record_) log_.push_back(DramCommand{type, Cycle(time), uint8_t(pc), uint16_t(bank), row});
}

void HbmChannel::handle(uint32_t kind, uint64_t) {
  if (kind == kTry) try_pending_ = false;
  try_pick();
}

void HbmChannel::try_pick() {
  if (!input_.ready()) return;
  const int64_t now_c = int64_t(now());
  if (now_c < next_pick_) {
    if (!try_pending_) {
      try_pending_ = true;
      queue().schedule(Cycle(next_pick_), this, kTry);
    }
    return;
  }
  const size_t i = pick_fr_fcfs();
  const Cycle arrival = input_.arrival(i);
  const Run run = input_.take(i);
  serve(run, arrival);
  if (input_.ready() && !try_pending_) {
    try_pending_ = true;
    queue().schedule(Cycle(std::max<int64_t>(next_pick_, now_c)), this, kTry);
  }
}

// FR-FCFS: the oldest arrived run whose row is already open wins; otherwise the oldest run.
size_t HbmChannel::pick_fr_fcfs() const {
  const size_t n = input_.ready_count();
  for (size_t i = 0; i < n; ++i) {
    const Run& r = const_cast<Link<Run>&>(input_).item(i);
    bool hit = true;
    for (size_t p = 0; p < pcs_.size(); ++p)
      if (r.count[p] && pcs_[p].banks[r.bank].open_row != int64_t(r.row)) hit = false;
    if (hit) return i;
  }
  return 0;
}

void HbmChannel::refresh_until(int64_t t) {
  if (!cfg_.dram.refresh) return;
  while (next_refresh_ <= t) {
    // Precharge all open banks once their reads and tRAS allow, then refresh the whole channel.
    int64_t t_pre = next_refresh_;
    bool any_open = false;
    for (auto& p : pcs_)
      for (auto& b : p.banks) {
        t_pre = std::max(t_pre, b.ready_act - int64_t(t_.tRP));  // a precharge already under way
        if (b.open_row >= 0) {
          any_open = true;
          t_pre = std::max({t_pre, b.t_act + int64_t(t_.tRAS), b.last_read + int64_t(t_.tRTP)});
        }
      }
    const int64_t t_ref = t_pre + (any_open ? int64_t(t_.tRP) : 0);
    int64_t ready = t_ref;
    for (auto& p : pcs_)
      for (auto& b : p.banks) ready = std::max(ready, b.ready_act);
    for (uint32_t pc = 0; pc < pcs_.size(); ++pc) {
      auto& p = pcs_[pc];
      for (uint32_t bi = 0; bi < p.banks.size(); ++bi) {
        auto& b = p.banks[bi];
        if (b.open_row >= 0) log(DramCommand::kPrecharge, t_pre, pc, bi, uint64_t(b.open_row));
        b.open_row = -1;
        b.ready_act = ready + int64_t(t_.tRFC);
      }
      log(DramCommand::kRefresh, ready, pc, 0, 0);
    }
    if (!all_closed_) {
      stats_.active_standby_cycles += double(std::max<int64_t>(0, t_pre - active_since_));
      all_closed_ = true;
    }
    ++stats_.refreshes;
    next_refresh_ += t_.tREFI;
  }
}

void HbmChannel::serve(const Run& run, Cycle arrival) {
  const int64_t t = int64_t(now());
  refresh_until(t);
  const uint32_t bpg = cfg_.dram.banks_per_group;
  const uint32_t group = run.bank / bpg;
  const int64_t burst = cfg_.dram.burst_cycles;
  const uint32_t npc = uint32_t(pcs_.size());
  int64_t first_data = INT64_MAX, last_data = 0, last_issue = t;
  for (uint32_t pc = 0; pc < npc; ++pc) {
    const uint32_t n = run.count[pc];
    if (!n) continue;
    Pseudo& p = pcs_[pc];
    Bank& b = p.banks[run.bank];
    if (b.open_row != int64_t(run.row)) {
      int64_t ready = std::max(t, b.ready_act);
      if (b.open_row >= 0) {
        ++stats_.row_conflicts;
        const int64_t t_pre = std::max({t, b.t_act + int64_t(t_.tRAS), b.last_read + int64_t(t_.tRTP)});
        log(DramCommand::kPrecharge, t_pre, pc, run.bank, uint64_t(b.open_row));
        ready = std::max(ready, t_pre + int64_t(t_.tRP));
      }
      const int64_t rrd = p.last_act_group == group ? t_.tRRD_L : t_.tRRD_S;
      const int64_t t_act = std::max({ready, b.t_act + int64_t(t_.tRC), p.last_act + rrd,
                                      p.act_window[p.act_index] + int64_t(t_.tFAW)});
      log(DramCommand::kActivate, t_act, pc, run.bank, run.row);
      p.act_window[p.act_index] = t_act;
      p.act_index = (p.act_index + 1) % 4;
      p.last_act = t_act;
      p.last_act_group = group;
      b.open_row = int64_t(run.row);
      b.t_act = t_act;
      b.col_ready = t_act + t_.tRCD;
      ++stats_.activates;
      ++stats_.row_misses;
      stats_.row_hits += n - 1;
      if (all_closed_) {
        all_closed_ = false;
        active_since_ = t_act;
      }
    } else {
      stats_.row_hits += n;
    }
    for (uint32_t j = 0; j < n; ++j) {
      const int64_t ccd = p.last_read_group == group ? t_.tCCD_L : t_.tCCD_S;
      // the j-th address of this pseudo-channel crosses the crossbar at one address per cycle per channel
      const int64_t t_rd = std::max({t, b.col_ready, int64_t(arrival) + int64_t(j) * npc + pc,
                                     p.last_read + std::max<int64_t>(ccd, burst)});
      log(run.write ? DramCommand::kWrite : DramCommand::kRead, t_rd, pc, run.bank, run.row);
      p.last_read = t_rd;
      p.last_read_group = group;
      b.last_read = t_rd;
      const int64_t done = t_rd + t_.tCL + burst;
      first_data = std::min(first_data, done);
      last_data = std::max(last_data, done);
    }
    last_issue = std::max(last_issue, p.last_read);
    stats_.transactions += n;
    (run.write ? stats_.bytes_written : stats_.bytes_read) += uint64_t(n) * cfg_.transaction_bytes;
    stats_.data_bus_cycles += double(n) * burst / npc;
  }
  // Look ahead by one row activation so the next run's ACT overlaps this run's reads.
  next_pick_ = std::max<int64_t>(t + 1, last_issue - int64_t(t_.tRP + t_.tRCD));
  last_data_ = std::max<Cycle>(last_data_, Cycle(last_data));
  if (sink_) sink_->run_scheduled(run, Cycle(first_data), Cycle(last_data));
}

void HbmChannel::finish(Cycle end) {
  refresh_until(int64_t(end));
  if (!all_closed_) {
    stats_.active_standby_cycles += double(std::max<int64_t>(0, int64_t(end) - active_since_));
    all_closed_ = true;
  }
}

}  // namespace spatten::hwsim
