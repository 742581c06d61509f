// Whole-simulator tiers: theoretical peaks (DRAM bandwidth, MAC rate), determinism, timing legality of a full
// run, fetch accounting against hand counts, dense baseline, preset errors.
#include <gtest/gtest.h>

#include <map>
#include <tuple>
#include <vector>

#include "config.h"
#include "errors.h"
#include "registry.h"
#include "simulator.h"
#include "topk_model.h"

#include <algorithm>
#include <cmath>
#include <string>

using namespace spatten::hwsim;

namespace {

HwConfig preset(const std::string& name = "spatten") { return load_preset(name, {SPATTEN_TEST_PRESET_DIR}); }

TraceRow row(Stage stage, uint32_t layer, uint32_t head, uint64_t q, uint64_t kv, uint64_t keys, uint64_t values) {
  TraceRow r{};
  r.stage = stage;
  r.layer = layer;
  r.head = head;
  r.head_kept = true;
  r.d_head = 64;
  r.query_rows = q;
  r.kv_len = kv;
  r.keys_fetched = keys;
  r.values_fetched = values;
  r.k_msb_bits = r.k_lsb_bits = r.q_bits = r.v_bits = -1;
  r.threshold = -1;
  r.topk_kind = TopkKind::kNone;
  r.topk_k = -1;
  return r;
}

TraceRow with_bits(TraceRow r, int32_t bits) {
  r.k_msb_bits = r.q_bits = r.v_bits = bits;
  return r;
}

// Generation with long unpruned rows at 8 bits: 64 B per key and value, 8 keys/cycle = what the Q.K array takes.
Trace bandwidth_bound(uint32_t layers = 1, uint32_t heads = 64, int32_t bits = 8) {
  Trace t;
  t.source = "bandwidth-bound";
  for (uint32_t l = 0; l < layers; ++l)
    for (uint32_t h = 0; h < heads; ++h)
      t.rows.push_back(with_bits(row(Stage::kGenerate, l, h, 1, 1024, 1024, 1024), bits));
  return t;
}

// BERT-like summarization: 384 x 384 per head, Q.K and P.V arrays busy, DRAM light.
Trace compute_bound(uint32_t layers = 1, int32_t bits = 8) {
  Trace t;
  t.source = "compute-bound";
  for (uint32_t l = 0; l < layers; ++l)
    for (uint32_t h = 0; h < 24; ++h)
      t.rows.push_back(with_bits(row(Stage::kSummarize, l, h, 384, 384, 384, 384), bits));
  return t;
}

}  // namespace

TEST(Simulator, BandwidthBoundTraceNearlyReachesDramPeak) {
  // 8-bit keys arrive at exactly the Q.K array's 8 keys/cycle and the 2,048-slot key buffer holds two
  // 1,024-key requests, so a few percent go to the per-request K -> softmax -> V turnaround.
  const HwConfig cfg = preset();
  const Report r = simulate_once(bandwidth_bound(1, 128), cfg);
  const double bytes_expected = 128.0 * 2 * 1024 * 64;  // 128 heads x (K + V) x 1024 x 64 B
  EXPECT_EQ(double(r.dram_bytes_read), bytes_expected);
  EXPECT_EQ(r.dram_bytes_written, 128u * 2 * 64);  // the new token's K and V per head
  const double utilization = double(r.dram_bytes()) / double(r.cycles) / cfg.peak_dram_bytes_per_cycle();
  EXPECT_GE(utilization, 0.88);
  EXPECT_LE(utilization, 1.0);
}

TEST(Simulator, ComputeBoundSummarizationReachesNinetyPercentOfMacRate) {
  const HwConfig cfg = preset();
  const Report r = simulate_once(compute_bound(), cfg);
  const double macs = 24.0 * 2 * 384 * 384 * 64;  // Q.K and P.V per head
  EXPECT_EQ(r.macs, macs);
  EXPECT_EQ(r.flops, 2 * macs);
  const double utilization = r.macs / double(r.cycles) / cfg.peak_macs_per_cycle();
  EXPECT_GE(utilization, 0.90);
  EXPECT_LE(utilization, 1.0);
}

TEST(Simulator, SameInputTwiceGivesIdenticalReports) {
  Trace t = bandwidth_bound();
  t.rows[3].values_fetched = 200;  // exercise the top-k engine
  t.rows[5].k_msb_bits = 6;
  t.rows[5].k_lsb_bits = 4;
  t.rows[5].lsb_refetch_rows = 1;
  t.rows[15].topk_kind = TopkKind::kToken;
  t.rows[15].topk_k = 512;
  const HwConfig cfg = preset();
  EXPECT_EQ(simulate(t, cfg).to_json(), simulate(t, cfg).to_json());
}

TEST(Simulator, FullRunIssuesOnlyLegalDramCommands) {
  Trace t;
  for (uint32_t h = 0; h < 8; ++h) {
    t.rows.push_back(row(Stage::kGenerate, 0, h, 1, 700, 300 + 40 * h, 90));
    t.rows.back().k_msb_bits = 6;
    t.rows.back().k_lsb_bits = 4;
    t.rows.back().lsb_refetch_rows = h % 2;
  }
  std::vector<std::vector<DramCommand>> log;
  SimOptions opt;
  opt.dram_commands = &log;
  const HwConfig cfg = preset();
  simulate_once(t, cfg, opt);
  ASSERT_EQ(log.size(), cfg.dram.channels);
  for (const auto& ch : log) {
    // per pseudo-channel reads are spaced by at least the burst; every RD follows an ACT of its row by tRCD
    std::map<std::pair<int, int>, int64_t> act;
    std::map<int, int64_t> last_rd;
    for (const auto& c : ch) {
      if (c.type == DramCommand::kActivate) act[std::make_pair(int(c.pc), int(c.bank))] = int64_t(c.time);
      if (c.type == DramCommand::kRead || c.type == DramCommand::kWrite) {
        ASSERT_TRUE(act.count(std::make_pair(int(c.pc), int(c.bank))));
        const int64_t since_act = int64_t(c.time) - act[std::make_pair(int(c.pc), int(c.bank))];
        EXPECT_GE(since_act, int64_t(cfg.dram.timing.tRCD));
        if (last_rd.count(c.pc)) EXPECT_GE(int64_t(c.time) - last_rd[c.pc], int64_t(cfg.dram.burst_cycles));
        last_rd[c.pc] = int64_t(c.time);
      }
    }
  }
}

TEST(Simulator, FetchBytesFollowTheTransactionRules) {
  // One generation head: 300 6-bit keys (fused pairs: 150 x 3 tx), LSB refetch of all 300 (1 tx each),
  // 90 8-bit values (2 tx each).
  Trace t;
  t.rows.push_back(row(Stage::kGenerate, 0, 0, 1, 1000, 300, 90));
  t.rows[0].k_msb_bits = 6;
  t.rows[0].k_lsb_bits = 4;
  t.rows[0].lsb_refetch_rows = 1;
  t.rows[0].v_bits = 8;
  const Report r = simulate(t, preset(), true);
  EXPECT_EQ(r.dram_bytes_read, 32u * (450 + 300 + 180));
  // dense: all 1000 keys at 12 bits (an 8-bit pass, 2 tx, and a 4-bit LSB pass, 1 tx) and values at 8 bits
  // (2 tx), as TestSpAtten maps unquantized rows
  ASSERT_TRUE(r.dense);
  EXPECT_EQ(r.dense->dram_bytes_read, 32u * (3 + 2) * 1000);
  EXPECT_GT(r.dense->cycles, r.cycles);
  // the refetch recomputes Q.K: 300 + 300 + 90 MACs x 64, but only the first pass is useful work
  EXPECT_EQ(r.macs, 64.0 * (300 + 300 + 90));
  EXPECT_EQ(r.useful_macs, 64.0 * (300 + 90));
}

TEST(Simulator, CascadeTopkWaitsOnlyWhenItPrunesAndOnlyOnItsCriticalPath) {
  Trace t = bandwidth_bound(4, 16, -1);
  const HwConfig fast = preset();
  const HwConfig slow = load_preset("spatten", {SPATTEN_TEST_PRESET_DIR}, "hardware: {cascade_topk_parallelism: 1}");
  const Report base = simulate_once(t, slow);
  t.rows[15].topk_kind = TopkKind::kToken;  // after layer 0
  t.rows[15].topk_k = 1024;                 // keeps all 1024 tokens: selects nothing, costs nothing
  const Report noop = simulate_once(t, slow);
  EXPECT_EQ(noop.cycles, base.cycles);
  t.rows[15].topk_k = 500;  // prunes: layer 1 waits for it when it outlasts layer 0's last head
  const Report gated = simulate_once(t, slow);
  EXPECT_GT(gated.cycles, base.cycles);
  EXPECT_GE(simulate_once(t, fast).cycles, simulate_once(bandwidth_bound(4, 16, -1), fast).cycles);
  t.rows[20].head_kept = false;  // a pruned head does no work
  const Report pruned = simulate_once(t, slow);
  EXPECT_EQ(pruned.dram_bytes_read + 1024 * (96 + 64), gated.dram_bytes_read);
  EXPECT_EQ(pruned.requests + 1, gated.requests);
}

TEST(Simulator, LayersWaitForThePreviousLayerInDenseAndPrunedRuns) {
  // Layer l + 1 cannot start before layer l's outputs exist: two layers take twice one layer (the same rule
  // for a run without any top-k, i.e. the dense baseline).
  const HwConfig cfg = preset();
  const double one = double(simulate_once(bandwidth_bound(1, 16, -1), cfg).cycles);
  const double two = double(simulate_once(bandwidth_bound(2, 16, -1), cfg).cycles);
  EXPECT_GE(two / one, 1.98);  // no overlap between the layers (the second pays its own ramp-up again)
  const Report r = simulate(bandwidth_bound(2, 16, -1), cfg, true);
  EXPECT_EQ(r.dense->cycles, r.cycles);  // a trace that prunes nothing runs exactly as its dense baseline
}

TEST(Simulator, UnquantizedMapsExactlyAsTwelveBitKeysAndValues) {
  const HwConfig cfg = preset();
  const Report minus_one = simulate_once(bandwidth_bound(2, 8, -1), cfg);
  const Report twelve = simulate_once(bandwidth_bound(2, 8, 12), cfg);
  EXPECT_EQ(minus_one.cycles, twelve.cycles);
  EXPECT_EQ(minus_one.dram_bytes_read, twelve.dram_bytes_read);
  EXPECT_EQ(minus_one.dram_bytes_read, 16u * 1024 * (96 + 64));  // K 8 + 4 bits, V 8 bits
}

// Two decode steps shaped like the official GPT-2-small trace (summary-gpt2-small-wikitext2-per8.csv, steps >= 1):
// 12 layers x 12 heads, 1,024 tokens, cascade token top-ks after layers 0, 1 and 5, local value pruning to 20 %.
Trace gpt2_small_like() {
  const uint64_t keys[12] = {921, 716, 204, 204, 204, 204, 102, 102, 102, 102, 102, 102};
  const uint64_t values[12] = {184, 143, 40, 40, 40, 40, 20, 20, 20, 20, 20, 20};
  Trace t;
  for (uint32_t step = 0; step < 2; ++step)
    for (uint32_t l = 0; l < 12; ++l)
      for (uint32_t h = 0; h < 12; ++h) {
        TraceRow r = with_bits(row(Stage::kGenerate, l, h, 1, 1024 + step, keys[l], values[l]), 8);
        r.step = step;
        r.accumulate_importance = true;
        if (h == 11 && (l == 0 || l == 1 || l == 5)) {
          r.topk_kind = TopkKind::kToken;
          r.topk_k = int64_t(keys[l + 1]);
        }
        t.rows.push_back(r);
      }
  return t;
}

// BERT-like summarization: 4 layers x 12 heads of a 128-token sentence, the cascade keeping 128, 96, 64, 48.
Trace bert_like() {
  const uint64_t tokens[4] = {128, 96, 64, 48};
  Trace t;
  for (uint32_t l = 0; l < 4; ++l)
    for (uint32_t h = 0; h < 12; ++h) {
      TraceRow r = with_bits(row(Stage::kSummarize, l, h, tokens[l], 128, tokens[l], tokens[l]), 8);
      r.accumulate_importance = true;
      if (h == 11 && l < 3) {
        r.topk_kind = TopkKind::kToken;
        r.topk_k = int64_t(tokens[l + 1]);
      }
      t.rows.push_back(r);
    }
  return t;
}

TEST(Simulator, CyclesAndBytesNeverDecreaseAsBitsGrow) {
  // Exactly (no tolerance): K, V and both swept over 4..16 bits (docs/hwsim.md, "Bit widths").
  const HwConfig cfg = preset();
  const std::map<std::string, Trace> traces{
      {"bandwidth-bound", bandwidth_bound(2, 8, 8)}, {"gpt2-small-like", gpt2_small_like()}, {"bert-like", bert_like()}};
  for (const auto& [name, trace] : traces)
    for (const std::string sweep : {"K", "V", "KV"}) {
      Cycle prev_cycles = 0;
      uint64_t prev_bytes = 0;
      for (int32_t bits = 4; bits <= 16; ++bits) {
        Trace t = trace;
        for (auto& r : t.rows) {
          if (sweep != "V") r.k_msb_bits = bits;
          if (sweep != "K") r.v_bits = bits;
        }
        const Report rep = simulate_once(t, cfg);
        EXPECT_GE(rep.cycles, prev_cycles) << name << " " << sweep << " " << bits << " bits";
        EXPECT_GE(rep.dram_bytes_read, prev_bytes) << name << " " << sweep << " " << bits << " bits";
        prev_cycles = rep.cycles;
        prev_bytes = rep.dram_bytes_read;
      }
    }
}

TEST(Simulator, KeysBeyondTheBufferAreRefetchedPerQueryTile) {
  // 8,192-token summarization of one head at 8 bits: K and V (512 KiB each) exceed the 2,048-vector buffers,
  // so each of the ceil(8192 / 2048) = 4 query tiles streams them again (docs/hwsim.md, Capacity).
  Trace t;
  t.rows.push_back(with_bits(row(Stage::kSummarize, 0, 0, 8192, 8192, 8192, 8192), 8));
  const Report r = simulate_once(t, preset());
  const uint64_t one_pass = 8192u * 64;
  EXPECT_EQ(r.dram_bytes_read, 4 * one_pass + 4 * one_pass + one_pass);  // K x 4, V x 4, Q once
  EXPECT_EQ(r.dram_bytes_refetched, 3 * one_pass * 2);
  // Within capacity nothing is refetched.
  Trace small;
  small.rows.push_back(with_bits(row(Stage::kSummarize, 0, 0, 2048, 2048, 2048, 2048), 8));
  EXPECT_EQ(simulate_once(small, preset()).dram_bytes_refetched, 0u);
}

TEST(Simulator, GroupedQueryHeadsShareOneKvFetch) {
  Trace mha = bandwidth_bound(2, 8, 8);
  mha.meta_json = "{\"heads\": 8, \"kv_heads\": 8}";
  Trace gqa = mha;
  gqa.meta_json = "{\"heads\": 8, \"kv_heads\": 4}";
  const Report a = simulate(mha, preset(), true), b = simulate(gqa, preset(), true);
  EXPECT_EQ(2 * b.dram_bytes_read, a.dram_bytes_read);
  EXPECT_EQ(2 * b.dense->dram_bytes_read, a.dense->dram_bytes_read);
  EXPECT_EQ(b.macs, a.macs);  // same queries, same work
  const HwConfig per_head = load_preset("spatten", {SPATTEN_TEST_PRESET_DIR}, "hardware: {gqa_shared_kv: false}");
  EXPECT_EQ(simulate_once(gqa, per_head).dram_bytes_read, a.dram_bytes_read);
}

TEST(Simulator, SequencesOfABatchRunIndependently) {
  // Four sequences of two layers: with a sequence column they overlap; as one sequence they chain.
  Trace batch, chained;
  for (uint32_t s = 0; s < 4; ++s)
    for (uint32_t l = 0; l < 2; ++l)
      for (uint32_t h = 0; h < 4; ++h) {
        TraceRow r = with_bits(row(Stage::kGenerate, l, h, 1, 512, 512, 512), 8);
        chained.rows.push_back(r);
        r.sequence = s;
        batch.rows.push_back(r);
      }
  const Report b = simulate_once(batch, preset()), c = simulate_once(chained, preset());
  ASSERT_EQ(b.sequences.size(), 4u);
  ASSERT_EQ(c.sequences.size(), 1u);
  for (const auto& s : b.sequences) EXPECT_EQ(s.requests, 8u);
  EXPECT_LT(b.cycles, c.cycles);
  EXPECT_EQ(b.dram_bytes_read, c.dram_bytes_read);
}

TEST(Simulator, GenerationAppendsKvAndWritesAreTimed) {
  // Each generation request appends one K (8 + 4 bits here: 96 B) and one V (8 bits: 64 B) to the cache.
  const Report r = simulate_once(bandwidth_bound(1, 16, -1), preset());
  EXPECT_EQ(r.dram_bytes_written, 16u * (96 + 64));
}

TEST(Simulator, SmallerPresetIsSlower) {
  const Report full = simulate_once(bandwidth_bound(), preset("spatten"));
  const Report eighth = simulate_once(bandwidth_bound(), preset("spatten-1/8"));
  EXPECT_EQ(full.dram_bytes_read, eighth.dram_bytes_read);
  // 1/8 of the DRAM channels: about 8x the cycles on a bandwidth-bound trace
  EXPECT_NEAR(double(eighth.cycles) / double(full.cycles), 8.0, 1.0);
}

TEST(Presets, UnknownKeysAreRejectedWithTheNearestValidName) {
  for (const auto& [overrides, named, hint] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"hardware: {topk_paralelism: 1}", "hardware.topk_paralelism", "hardware.topk_parallelism"},
           {"hardwre: {topk_parallelism: 1}", "hardwre", "hardware"},
           {"dram: {chanels: 4}", "dram.chanels", "dram.channels"}}) {
    try {
      load_preset("spatten", {SPATTEN_TEST_PRESET_DIR}, overrides);
      ADD_FAILURE() << overrides << " was accepted";
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("unknown parameter " + named + " "), std::string::npos) << msg;
      EXPECT_NE(msg.find("did you mean " + hint + "?"), std::string::npos) << msg;
    }
  }
}

TEST(Presets, ErrorsNameTheParameter) {
  EXPECT_THROW(load_preset("no-such-preset", {SPATTEN_TEST_PRESET_DIR}), ConfigError);
  try {
    load_preset("spatten", {SPATTEN_TEST_PRESET_DIR}, "hardware: {topk_parallelism: 0}");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("hardware.topk_parallelism"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("topk-engine"), std::string::npos);
  }
  EXPECT_THROW(load_preset("spatten", {SPATTEN_TEST_PRESET_DIR}, "nonsense: {a: 1}"), ConfigError);
  EXPECT_THROW(load_preset_file("/nonexistent.yaml"), ConfigError);
  const HwConfig d = load_preset("dense", {SPATTEN_TEST_PRESET_DIR});
  EXPECT_TRUE(d.dense);
  EXPECT_EQ(d.multipliers_per_array, 512u);
  const HwConfig e = load_preset("spatten-1/8", {SPATTEN_TEST_PRESET_DIR});
  EXPECT_FALSE(e.dense);
  EXPECT_EQ(e.dram.channels, 2u);
  EXPECT_EQ(e.dram.timing.tRCD, 7u);  // inherited
  EXPECT_EQ(e.buffer_key_slots(), d.buffer_key_slots());  // same 196,608-byte buffers
}

TEST(Registry, EveryComponentHasADescription) {
  const auto& r = builtin_components();
  EXPECT_GE(r.components().size(), 10u);
  for (const auto& c : r.components()) EXPECT_FALSE(c.description.empty()) << c.name;
  ComponentRegistry mine;
  EXPECT_THROW(mine.add("x", ""), std::invalid_argument);
  mine.add("x", "does x");
  EXPECT_THROW(mine.add("x", "again"), std::invalid_argument);
}

namespace {

// 128 generation heads of 512 4-bit keys (16 keys/cycle from DRAM, twice the Q.K rate; 4 heads fit the
// 2048-key buffer) keeping 102 values: Q.K is 512 x 64 / 512 = 64 cycles per head, so any top-k work beyond
// that shows up in the total.
Trace topk_heads() {
  Trace t;
  t.source = "topk-heads";
  for (uint32_t h = 0; h < 128; ++h) {
    t.rows.push_back(row(Stage::kGenerate, 0, h, 1, 512, 512, 102));
    t.rows.back().k_msb_bits = 4;
    t.rows.back().v_bits = 4;
  }
  return t;
}

}  // namespace

TEST(Simulator, PipelinedTopkOverlapsTheNextHeadsQk) {
  // Hand reference from the quick-select cost model (tested on its own in topk_test.cpp): T passes in all,
  // the first of them ceil(512/P)+3 cycles streams with the probabilities, the rest are `rest`.
  const Trace t = topk_heads();
  const double heads = 128, qk = 512.0 * 64 / 512, fill = 512.0 / 8;
  const double setup = 1500;  // first head's fetch + Q.K + softmax, last head's top-k + V fetch + P.V
  for (uint32_t p : {16u, 32u, 64u}) {
    const std::string hw = "hardware: {topk_parallelism: " + std::to_string(p) + "}";
    TopkLatencyModel model(p);
    const double T = double(model.cycles(512, 102).cycles);
    const double rest = T - (std::ceil(512.0 / p) + 3);
    const Report piped = simulate_once(t, load_preset("spatten", {SPATTEN_TEST_PRESET_DIR}, hw));
    // Pipelined: one head's refinement passes run under the next head's Q.K, so a head costs the larger of
    // the two, never their sum.
    EXPECT_LE(double(piped.cycles), heads * std::max(qk, rest) + setup) << "P=" << p;
    EXPECT_LT(double(piped.cycles), heads * (qk + rest)) << "P=" << p;
    if (rest < qk) EXPECT_GE(double(piped.cycles), heads * qk) << "P=" << p;  // Q.K-bound: more P cannot help
    // The RTL's QuickSelect FSM (one row at a time): Fill at 8 per cycle, all T cycles of passes, then the
    // output filter drains the row before the next Fill, so rows serialize on the engine.
    const Report serial = simulate_once(
        t, load_preset("spatten", {SPATTEN_TEST_PRESET_DIR},
                       "hardware: {topk_parallelism: " + std::to_string(p) + ", topk_pipelined: false}"));
    EXPECT_GE(double(serial.cycles), heads * (fill + T + fill)) << "P=" << p;
    EXPECT_LE(double(serial.cycles), heads * (fill + T + fill) + setup) << "P=" << p;
  }
}

TEST(Simulator, TwelveBitKeysTakeAnEightBitPassAndAnLsbPass) {
  // The fetcher has no 12-bit profile (only 4, 6-fused and 8 bits): 12-bit keys = 8-bit pass (2 tx) + 4-bit
  // LSB pass (1 tx) with a Q.K recompute, the same 3 tx per key as one 12-bit fetch.
  Trace t;
  t.rows.push_back(row(Stage::kGenerate, 0, 0, 1, 1000, 300, 90));
  t.rows[0].k_msb_bits = 12;
  t.rows[0].v_bits = 8;
  const Report r = simulate_once(t, preset());
  EXPECT_EQ(r.dram_bytes_read, 32u * (300 * 3 + 90 * 2));
  EXPECT_EQ(r.macs, 64.0 * (300 + 300 + 90));
  EXPECT_EQ(r.useful_macs, 64.0 * (300 + 90));
}
