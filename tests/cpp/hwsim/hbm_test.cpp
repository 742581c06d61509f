// HBM2 channel harness: timing legality of every command (checked by an independent replay), bandwidth of a
// streaming pattern against the theoretical peak, FR-FCFS, refresh.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "config.h"
#include "dram.h"

using namespace spatten::hwsim;

namespace {

HwConfig preset() { return load_preset("spatten", {SPATTEN_TEST_PRESET_DIR}); }

struct Sink : RunSink {
  std::vector<std::pair<uint32_t, Cycle>> done;  // (job, last data)
  void run_scheduled(const Run& run, Cycle, Cycle last) override { done.emplace_back(run.job, last); }
};

// Feeds runs into the channel's input link as fast as it accepts them.
struct Feeder : Component {
  HbmChannel& ch;
  std::vector<spatten::hwsim::Run> runs;
  size_t next = 0;
  Feeder(EventQueue& q, HbmChannel& c, std::vector<spatten::hwsim::Run> r) : Component("feeder", q), ch(c), runs(std::move(r)) {
    ch.input().set_producer(this, 0);
  }
  void handle(uint32_t, uint64_t) override {
    while (next < runs.size() && ch.input().push(runs[next])) ++next;
  }
};

// Independent replay of the command log: every constraint of the JEDEC-style timing table.
std::vector<std::string> violations(const std::vector<DramCommand>& log, const DramTiming& t, uint32_t banks_per_group,
                                    uint32_t burst) {
  std::vector<std::string> bad;
  auto cmds = log;
  std::stable_sort(cmds.begin(), cmds.end(), [](const DramCommand& a, const DramCommand& b) { return a.time < b.time; });
  struct BankView {
    int64_t open = -1;
    int64_t act = -1000000, pre = -1000000, rd = -1000000;
  };
  std::map<std::pair<int, int>, BankView> banks;
  std::map<int, std::vector<int64_t>> acts;  // per pseudo-channel
  std::map<int, std::pair<int64_t, int>> last_rd;
  std::map<int, int64_t> ref_done;
  std::map<int, int> last_act_group;
  auto fail = [&](const std::string& what, const DramCommand& c) {
    bad.push_back(what + " at " + std::to_string(c.time) + " pc " + std::to_string(c.pc) + " bank " +
                  std::to_string(c.bank));
  };
  for (const auto& c : cmds) {
    const int64_t T = int64_t(c.time);
    if (ref_done.count(c.pc) && T < ref_done[c.pc] && c.type != DramCommand::kRefresh) fail("command during tRFC", c);
    auto& b = banks[{c.pc, c.bank}];
    const int group = c.bank / banks_per_group;
    switch (c.type) {
      case DramCommand::kActivate: {
        if (b.open >= 0) fail("ACT to an open bank", c);
        if (T - b.pre < int64_t(t.tRP)) fail("tRP", c);
        if (T - b.act < int64_t(t.tRC)) fail("tRC", c);
        auto& a = acts[c.pc];
        if (!a.empty()) {
          const int64_t rrd = last_act_group[c.pc] == group ? t.tRRD_L : t.tRRD_S;
          if (T - a.back() < rrd) fail("tRRD", c);
        }
        if (a.size() >= 4 && T - a[a.size() - 4] < int64_t(t.tFAW)) fail("tFAW", c);
        a.push_back(T);
        last_act_group[c.pc] = group;
        b.open = int64_t(c.row);
        b.act = T;
        break;
      }
      case DramCommand::kPrecharge:
        if (b.open < 0) fail("PRE to a closed bank", c);
        if (T - b.act < int64_t(t.tRAS)) fail("tRAS", c);
        if (T - b.rd < int64_t(t.tRTP)) fail("tRTP", c);
        b.open = -1;
        b.pre = T;
        break;
      case DramCommand::kWrite:  // writes use the column timing of reads (dram.h)
      case DramCommand::kRead: {
        if (b.open != int64_t(c.row)) fail("RD to a row that is not open", c);
        if (T - b.act < int64_t(t.tRCD)) fail("tRCD", c);
        if (last_rd.count(c.pc)) {
          const auto [prev, prev_group] = last_rd[c.pc];
          const int64_t ccd = prev_group == group ? t.tCCD_L : t.tCCD_S;
          if (T - prev < std::max<int64_t>(ccd, burst)) fail("tCCD / data-bus overlap", c);
        }
        last_rd[c.pc] = {T, group};
        b.rd = T;
        break;
      }
      case DramCommand::kRefresh:
        for (auto& [key, view] : banks)
          if (key.first == c.pc) {
            if (view.open >= 0) fail("REF with an open bank", c);
            if (T - view.pre < int64_t(t.tRP)) fail("REF before tRP", c);
          }
        ref_done[c.pc] = T + t.tRFC;
        break;
    }
  }
  return bad;
}

std::vector<spatten::hwsim::Run> random_runs(uint32_t n, uint32_t seed, uint32_t banks) {
  std::mt19937 rng(seed);
  std::vector<spatten::hwsim::Run> runs;
  for (uint32_t i = 0; i < n; ++i) {
    spatten::hwsim::Run r;
    r.job = i;
    r.bank = rng() % banks;
    r.row = rng() % 4;  // few rows: many conflicts and hits
    r.count[0] = rng() % 5;
    r.count[1] = 1 + rng() % 5;
    runs.push_back(r);
  }
  return runs;
}

}  // namespace

TEST(HbmChannel, RandomTrafficNeverViolatesTiming) {
  const HwConfig cfg = preset();
  EventQueue q;
  Sink sink;
  HbmChannel ch("hbm2-channel", q, cfg, &sink);
  ch.record_commands(true);
  Feeder feeder(q, ch, random_runs(3000, 7, 16));
  q.schedule(0, &feeder, 0);
  q.run();
  ch.finish(q.now() + 20000);  // covers several refreshes, also while idle
  const auto bad = violations(ch.commands(), cfg.dram.timing, cfg.dram.banks_per_group, cfg.dram.burst_cycles);
  EXPECT_TRUE(bad.empty()) << bad.size() << " violations, first: " << (bad.empty() ? "" : bad[0]);
  EXPECT_EQ(sink.done.size(), 3000u);
  EXPECT_GT(ch.stats().row_conflicts, 100u);
  EXPECT_GT(ch.stats().refreshes, 0u);
}

TEST(HbmChannel, CheckerCatchesAnIllegalLog) {
  // The checker itself must fail on a hand-made illegal sequence (ACT then RD after 3 < tRCD cycles).
  const HwConfig cfg = preset();
  std::vector<DramCommand> log{{DramCommand::kActivate, 100, 0, 0, 5}, {DramCommand::kRead, 103, 0, 0, 5}};
  const auto bad = violations(log, cfg.dram.timing, cfg.dram.banks_per_group, cfg.dram.burst_cycles);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_NE(bad[0].find("tRCD"), std::string::npos);
}

TEST(HbmChannel, StreamingReachesNinetyPercentOfPeak) {
  HwConfig cfg = preset();
  EventQueue q;
  Sink sink;
  HbmChannel ch("hbm2-channel", q, cfg, &sink);
  ch.record_commands(true);
  // Sequential 32-B transactions of a 4 MB stream, as the address map lays them out for this channel.
  AddressMap map(cfg);
  std::vector<std::vector<spatten::hwsim::Run>> per_channel(cfg.dram.channels);
  append_runs(map, Gather{0, 4 << 20 >> 6, 4 << 20 >> 6, 64 * 8}, cfg.transaction_bytes, 0, per_channel);
  Feeder feeder(q, ch, per_channel[0]);
  q.schedule(0, &feeder, 0);
  q.run();
  const Cycle end = std::max_element(sink.done.begin(), sink.done.end(),
                                     [](auto& a, auto& b) { return a.second < b.second; })->second;
  const double bytes = double(ch.stats().bytes_read);
  const double peak = double(cfg.dram.pseudo_channels) * cfg.transaction_bytes / cfg.dram.burst_cycles;  // 32 B/cycle
  EXPECT_EQ(bytes, double(4 << 20) / cfg.dram.channels);
  EXPECT_GE(bytes / double(end) / peak, 0.90);
  EXPECT_LE(bytes / double(end) / peak, 1.0);
  // a row-sequential stream opens each row once
  EXPECT_EQ(ch.stats().row_misses, ch.stats().activates);
  EXPECT_EQ(ch.stats().row_hits + ch.stats().row_misses, ch.stats().transactions);
  const auto bad = violations(ch.commands(), cfg.dram.timing, cfg.dram.banks_per_group, cfg.dram.burst_cycles);
  EXPECT_TRUE(bad.empty()) << bad[0];
}

TEST(HbmChannel, FrFcfsServesAnOpenRowFirst) {
  HwConfig cfg = preset();
  cfg.dram.refresh = false;
  EventQueue q;
  Sink sink;
  HbmChannel ch("hbm2-channel", q, cfg, &sink);
  auto run = [](uint32_t job, uint64_t row) {
    spatten::hwsim::Run r;
    r.job = job;
    r.bank = 0;
    r.row = row;
    r.count[0] = 2;
    return r;
  };
  // Job 0 opens row 1; jobs 1 (row 2, conflict) and 2 (row 1, hit) wait together: the hit goes first.
  Feeder feeder(q, ch, {run(0, 1), run(1, 2), run(2, 1)});
  q.schedule(0, &feeder, 0);
  q.run();
  ASSERT_EQ(sink.done.size(), 3u);
  EXPECT_EQ(sink.done[0].first, 0u);
  EXPECT_EQ(sink.done[1].first, 2u);
  EXPECT_EQ(sink.done[2].first, 1u);
  EXPECT_EQ(ch.stats().row_conflicts, 1u);
  // First read: ACT at 2 (crossbar latency), RD at 2 + tRCD, data after tCL + burst.
  const auto& t = cfg.dram.timing;
  EXPECT_EQ(sink.done[0].second, 2 + t.tRCD + cfg.dram.burst_cycles + t.tCL + cfg.dram.burst_cycles);
}

TEST(AddressMap, TransactionsPerVector) {
  const uint32_t tx = 32;
  EXPECT_EQ(gather_transactions(Gather{0, 1, 1, 64 * 8}, tx), 2u);   // 8-bit vector = 2
  EXPECT_EQ(gather_transactions(Gather{0, 1, 1, 64 * 4}, tx), 1u);   // 4-bit LSB = 1
  EXPECT_EQ(gather_transactions(Gather{0, 2, 2, 64 * 6}, tx), 3u);   // fused 6-bit pair = 3
  EXPECT_EQ(gather_transactions(Gather{0, 1, 1, 64 * 12}, tx), 3u);  // 12-bit datapath = 3
  const HwConfig cfg = preset();
  AddressMap map(cfg);
  std::vector<std::vector<spatten::hwsim::Run>> per(cfg.dram.channels);
  append_runs(map, Gather{0, 100, 1000, 64 * 8}, tx, 3, per);  // sparse gather
  uint64_t total = 0;
  for (const auto& runs : per)
    for (const auto& r : runs) total += r.total();
  EXPECT_EQ(total, 200u);
  // a contiguous fetch spreads over every channel
  std::vector<std::vector<spatten::hwsim::Run>> dense(cfg.dram.channels);
  append_runs(map, Gather{0, 64, 64, 64 * 8}, tx, 4, dense);
  for (const auto& runs : dense) {
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_EQ(runs[0].total(), 8u);
  }
}

namespace {

// Transactions per (channel, pseudo-channel) of a gather of `count` of `total` vectors.
std::map<std::pair<uint32_t, uint32_t>, uint64_t> load(const HwConfig& cfg, uint64_t count, uint64_t total, uint32_t bits) {
  AddressMap map(cfg);
  std::vector<std::vector<spatten::hwsim::Run>> per(cfg.dram.channels);
  append_runs(map, Gather{0, count, total, 64ull * bits}, cfg.transaction_bytes, 0, per);
  std::map<std::pair<uint32_t, uint32_t>, uint64_t> out;
  for (uint32_t c = 0; c < cfg.dram.channels; ++c)
    for (uint32_t pc = 0; pc < cfg.dram.pseudo_channels; ++pc) out[{c, pc}] = 0;
  for (uint32_t c = 0; c < cfg.dram.channels; ++c)
    for (const auto& r : per[c])
      for (uint32_t pc = 0; pc < cfg.dram.pseudo_channels; ++pc) out[{c, pc}] += r.count[pc];
  return out;
}

}  // namespace

TEST(AddressMap, SparseGathersWalkThePseudoChannelsInTurn) {
  // An exactly strided gather resonates with the 32-B channel interleave: 143 of 1,024 6-bit values as 72
  // contiguous fused pairs at a stride of 64/9 pairs would put 24 of 215 transactions on one pseudo-channel.
  // Placed in turn, every pseudo-channel gets its share to within one, and a narrower width never loads a
  // pseudo-channel more than a wider one (docs/hwsim.md, "Bit widths").
  const HwConfig cfg = preset();
  for (const uint64_t count : {1u, 2u, 20u, 40u, 143u, 184u, 204u, 716u, 921u, 1024u}) {
    std::map<std::pair<uint32_t, uint32_t>, uint64_t> previous;
    for (const uint32_t bits : {4u, 6u, 8u, 12u}) {
      const auto per = load(cfg, count, 1024, bits);
      uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
      for (const auto& [where, n] : per) {
        lo = std::min(lo, n);
        hi = std::max(hi, n);
        sum += n;
        if (!previous.empty()) EXPECT_LE(previous.at(where), n) << count << " vectors, " << bits << " bits";
      }
      EXPECT_EQ(sum, gather_transactions(Gather{0, count, 1024, 64ull * bits}, cfg.transaction_bytes));
      EXPECT_LE(hi - lo, 1u) << count << " vectors, " << bits << " bits";
      previous = per;
    }
  }
  // A fused 6-bit pair is one index of 96 B: three consecutive transactions (channels 0, 1, 2).
  const auto pair = load(cfg, 2, 1024, 6);
  for (uint32_t c = 0; c < cfg.dram.channels; ++c) EXPECT_EQ(pair.at({c, 0}), c < 3 ? 1u : 0u) << c;
}
