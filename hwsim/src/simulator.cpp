#include "simulator.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <tuple>
#include <stdexcept>

#include "crossbar.h"
#include "registry.h"
#include "topk_model.h"

namespace spatten::hwsim {

namespace {

constexpr Cycle kNever = std::numeric_limits<Cycle>::max();

uint64_t ceil_div(uint64_t a, uint64_t b) { return b ? (a + b - 1) / b : 0; }
uint32_t ceil_log2(uint64_t v) {
  uint32_t b = 0;
  while ((uint64_t(1) << b) < v) ++b;
  return b;
}

// A datapath unit whose timing is a streaming server: it starts when its input starts and it is free, does
// `work` cycles of it, and cannot finish before its input has finished. Units are fed in order by the
// controller, so a unit needs no events of its own.
class StreamUnit : public Component {
 public:
  StreamUnit(const std::string& name, EventQueue& q) : Component(name, q) {
    if (!builtin_components().has(name)) throw std::logic_error("unregistered component " + name);
  }
  void handle(uint32_t, uint64_t) override { throw std::logic_error(name() + " takes no events"); }
  std::pair<Cycle, Cycle> stream(Cycle in_first, Cycle in_last, uint64_t work) {
    const Cycle start = std::max(free_, in_first);
    const Cycle end = std::max(start + work, in_last);
    free_ = end;
    busy_cycles_ += double(work);
    return {start, end};
  }

 private:
  Cycle free_ = 0;
};

enum class JobKind : uint8_t { kKeys, kKeyLsb, kValues, kWrite };

struct FetchJob {
  uint32_t request;
  JobKind kind;
  uint64_t transactions = 0, done = 0;
  Cycle first = kNever, last = 0;
};

struct Request {
  uint32_t group = 0;
  uint32_t layer = 0;
  bool summarize = false;
  uint64_t q_rows = 0, keys = 0, values = 0, kv_len = 0, d = 0, refetch_rows = 0;
  uint32_t k_bits = 0, k_lsb_bits = 0, v_bits = 0, q_bits = 0;
  // Capacity (see tile_passes): how often K and V stream from DRAM, and whether an LSB pass must refetch the
  // MSBs because the keys did not stay in the buffer until the requant decision.
  uint64_t k_passes = 1, v_passes = 1;
  bool lsb_refetches_msb = false;
  bool accumulate = false, rescale = false;
  TopkKind topk = TopkKind::kNone;
  uint64_t topk_k = 0, heads_in_layer = 0;
  uint64_t key_slots = 0, value_slots = 0;
  uint64_t region = 0;  // index of this (layer, head) in the address space
};

// One layer of one sequence (a (sequence, stage, step, layer) group of the trace). Its requests may issue only
// once the group it depends on (the same sequence's previous layer) is complete: all its requests have
// produced their outputs and its cascade top-k, if that prunes anything, is done.
struct Group {
  uint32_t layer = 0, sequence = 0;
  int64_t depends_on = -1;
  uint64_t remaining = 0;  // requests not yet done
  bool topk_pending = false, complete = false;
};

class Accelerator;

// K/V fetcher: splits fetches into row-runs, sends them through the crossbar, gathers completions.
class KvFetcher : public Component, public RunSink {
 public:
  enum Kind : uint32_t { kCompletion = 0 };
  KvFetcher(EventQueue& q, const HwConfig& cfg, Crossbar& xbar, Accelerator& acc)
      : Component("kv-fetcher", q), cfg_(cfg), map_(cfg), xbar_(xbar), acc_(acc), per_channel_(cfg.dram.channels) {}

  uint32_t start(uint32_t request, JobKind kind, const std::vector<Gather>& gathers);
  FetchJob& job(uint32_t id) { return jobs_[id]; }
  void run_scheduled(const Run& run, Cycle first_data, Cycle last_data) override;
  void handle(uint32_t kind, uint64_t arg) override;
  uint64_t runs() const { return runs_; }

 private:
  void finished(uint32_t id);
  const HwConfig& cfg_;
  AddressMap map_;
  Crossbar& xbar_;
  Accelerator& acc_;
  std::vector<FetchJob> jobs_;
  std::vector<std::vector<Run>> per_channel_;
  uint64_t runs_ = 0;
};

// Request scheduler + the per-request controller that walks a request through the datapath units.
class Accelerator : public Component {
  const HwConfig& cfg_;
  std::vector<Request> requests_;
  std::vector<Group> groups_;

 public:
  enum Kind : uint32_t { kTryIssue, kJobDone, kDecision, kProbsReady, kIssueValues, kDone, kTopkDone };

  Accelerator(EventQueue& q, const HwConfig& cfg, std::vector<Request> requests, std::vector<Group> groups)
      : Component("request-scheduler", q),
        cfg_(cfg),
        requests_(std::move(requests)),
        groups_(std::move(groups)),
        group_end_(groups_.size(), 0),
        group_bytes_(groups_.size(), 0),
        qk_("qk-unit", q),
        softmax_("softmax", q),
        requant_("requant-decision", q),
        topk_("topk-engine", q),
        topk_input_("topk-input-pass", q),
        pv_("pv-unit", q),
        importance_("importance-accumulator", q),
        local_topk_(cfg.topk_parallelism),
        cascade_topk_(cfg.cascade_topk_parallelism),
        key_slots_free_(cfg.buffer_key_slots()),
        value_slots_free_(cfg.buffer_key_slots()) {}

  void attach(KvFetcher* fetcher) { fetcher_ = fetcher; }
  void handle(uint32_t kind, uint64_t arg) override;
  void note_bytes(uint32_t request, uint64_t bytes) { group_bytes_[requests_[request].group] += bytes; }

  // Counters for the report and the energy model.
  double macs = 0, useful_macs = 0, scores = 0, topk_elements = 0, importance_adds = 0;
  double buffer_elements_written = 0, fetched_bits = 0, refetched_bytes = 0;
  std::vector<Cycle> group_end_;
  std::vector<uint64_t> group_bytes_;
  std::vector<const StreamUnit*> units() const { return {&qk_, &softmax_, &requant_, &topk_input_, &topk_, &pv_, &importance_};
  }

 private:
  uint64_t base(uint64_t region, uint32_t kind) const;
  void try_issue();
  void on_keys(uint32_t r, const FetchJob& job);
  void on_lsb(uint32_t r, const FetchJob& job);
  void on_values(uint32_t r, const FetchJob& job);
  void probs_ready(uint32_t r);
  bool issue_values(uint32_t r);
  Cycle attention(const Request& R, const FetchJob& job, uint64_t rows);
  void request_done(uint32_t r);
  void maybe_complete(uint32_t g);
  void write(uint32_t r, uint64_t vectors, uint64_t vector_bits);
  std::vector<Gather> repeated(const Gather& g, uint64_t passes);

  KvFetcher* fetcher_ = nullptr;
  StreamUnit qk_, softmax_, requant_, topk_, topk_input_, pv_, importance_;
  TopkLatencyModel local_topk_, cascade_topk_;
  size_t next_ = 0;
  bool issue_scheduled_ = false;
  Cycle last_issue_ = kNever;
  uint32_t key_allocs_ = 0, value_allocs_ = 0;
  uint64_t key_slots_free_, value_slots_free_;
  std::deque<uint32_t> value_wait_;

 public:
  uint64_t region_stride = 0, region_stagger = 0;
};

uint32_t KvFetcher::start(uint32_t request, JobKind kind, const std::vector<Gather>& gathers) {
  const uint32_t id = uint32_t(jobs_.size());
  jobs_.push_back(FetchJob{request, kind});
  FetchJob& job = jobs_.back();
  for (auto& runs : per_channel_) runs.clear();
  for (const auto& g : gathers) {
    job.transactions += gather_transactions(g, cfg_.transaction_bytes);
    append_runs(map_, g, cfg_.transaction_bytes, id, per_channel_);
  }
  if (kind == JobKind::kWrite)
    for (auto& runs : per_channel_)
      for (Run& run : runs) run.write = true;
  if (kind != JobKind::kWrite) acc_.note_bytes(request, job.transactions * cfg_.transaction_bytes);
  if (job.transactions == 0) {
    job.first = job.last = now();
    finished(id);
    return id;
  }
  for (uint32_t c = 0; c < per_channel_.size(); ++c)
    for (const Run& run : per_channel_[c]) {
      xbar_.enqueue(xbar_.master_for(id, c), c, run);
      ++runs_;
    }
  return id;
}

void KvFetcher::run_scheduled(const Run& run, Cycle first_data, Cycle last_data) {
  FetchJob& job = jobs_[run.job];
  job.first = std::min(job.first, first_data + cfg_.crossbar_latency);
  job.last = std::max(job.last, last_data + cfg_.crossbar_latency);
  queue().schedule(last_data + cfg_.crossbar_latency, this, kCompletion, (uint64_t(run.job) << 32) | run.total());
  busy_cycles_ += run.total();
}

void KvFetcher::handle(uint32_t, uint64_t arg) {
  const uint32_t id = uint32_t(arg >> 32);
  FetchJob& job = jobs_[id];
  job.done += arg & 0xffffffffu;
  if (job.done == job.transactions) finished(id);
}

void KvFetcher::finished(uint32_t id) { queue().schedule(now(), &acc_, Accelerator::kJobDone, id); }

uint64_t Accelerator::base(uint64_t region, uint32_t kind) const {
  // Regions are power-of-two aligned; staggering them by one bank each keeps concurrent streams off one bank.
  // Kinds: 0 keys, 1 key LSBs, 2 values, 3 queries, 4 writes.
  const uint64_t index = region * 8 + kind;
  return index * region_stride + (index % 16) * region_stagger;
}

void Accelerator::handle(uint32_t kind, uint64_t arg) {
  const uint32_t r = uint32_t(arg);
  switch (kind) {
    case kTryIssue:
      issue_scheduled_ = false;
      try_issue();
      break;
    case kJobDone: {
      const FetchJob& job = fetcher_->job(uint32_t(arg));
      if (job.kind == JobKind::kKeys) on_keys(job.request, job);
      else if (job.kind == JobKind::kKeyLsb) on_lsb(job.request, job);
      else if (job.kind == JobKind::kValues) on_values(job.request, job);
      break;
    }
    case kDecision: {
      const Request& R = requests_[r];
      if (R.refetch_rows && R.k_lsb_bits) {
        fetched_bits += double(R.keys) * R.d * R.k_lsb_bits;
        buffer_elements_written += double(R.keys) * R.d;
        std::vector<Gather> gathers{Gather{base(R.region, 1), R.keys, R.kv_len, R.d * R.k_lsb_bits}};
        if (R.lsb_refetches_msb) {  // the MSBs left the buffer while the row streamed: fetch them again
          const Gather msb{base(R.region, 0), R.keys, R.kv_len, R.d * R.k_bits};
          gathers.push_back(msb);
          fetched_bits += double(R.keys) * R.d * R.k_bits;
          refetched_bytes += double(gather_transactions(msb, cfg_.transaction_bytes) * cfg_.transaction_bytes);
        }
        fetcher_->start(r, JobKind::kKeyLsb, gathers);
      } else {
        probs_ready(r);
      }
      break;
    }
    case kProbsReady:
      probs_ready(r);
      break;
    case kIssueValues:
      if (!value_wait_.empty() || !issue_values(r)) value_wait_.push_back(r);
      break;
    case kDone:
      request_done(r);
      break;
    case kTopkDone: {
      Group& G = groups_[requests_[r].group];
      G.topk_pending = false;
      group_end_[requests_[r].group] = std::max(group_end_[requests_[r].group], now());
      maybe_complete(requests_[r].group);
      break;
    }
    default:
      throw std::logic_error("request-scheduler: unknown event");
  }
}

void Accelerator::request_done(uint32_t r) {
  const Request& R = requests_[r];
  value_slots_free_ += R.value_slots;
  --value_allocs_;
  group_end_[R.group] = std::max(group_end_[R.group], now());
  --groups_[R.group].remaining;
  while (!value_wait_.empty() && issue_values(value_wait_.front())) value_wait_.pop_front();
  maybe_complete(R.group);
}

void Accelerator::maybe_complete(uint32_t g) {
  Group& G = groups_[g];
  if (G.complete || G.remaining || G.topk_pending) return;
  G.complete = true;
  try_issue();  // the next layer of this sequence may start
}

std::vector<Gather> Accelerator::repeated(const Gather& g, uint64_t passes) {
  // Capacity refetch: the same vectors stream `passes` times; every pass after the first is counted as refetched.
  std::vector<Gather> out(passes, g);
  refetched_bytes += double((passes - 1) * gather_transactions(g, cfg_.transaction_bytes) * cfg_.transaction_bytes);
  return out;
}

void Accelerator::write(uint32_t r, uint64_t vectors, uint64_t vector_bits) {
  // DRAM writes share the channels with the reads (same command timing, counted as written bytes); nothing
  // waits for them, but they take bus cycles from the fetches and the run lasts until the last one lands.
  if (!vectors || !vector_bits) return;
  const Request& R = requests_[r];
  fetcher_->start(r, JobKind::kWrite, {Gather{base(R.region, 4), vectors, vectors, vector_bits}});
}

void Accelerator::try_issue() {
  while (next_ < requests_.size()) {
    if (last_issue_ == now()) {  // one request per cycle
      if (!issue_scheduled_) {
        issue_scheduled_ = true;
        queue().schedule(now() + 1, this, kTryIssue);
      }
      return;
    }
    const uint32_t r = uint32_t(next_);
    const Request& R = requests_[r];
    const int64_t dep = groups_[R.group].depends_on;
    if (dep >= 0 && !groups_[dep].complete) return;  // the previous layer's output does not exist yet
    if (key_allocs_ >= std::min(cfg_.max_live_requests, cfg_.request_fifo_depth) || key_slots_free_ < R.key_slots)
      return;  // a key-buffer release retries
    ++key_allocs_;
    key_slots_free_ -= R.key_slots;
    last_issue_ = now();
    busy_cycles_ += 1;
    ++next_;
    std::vector<Gather> gathers = repeated(Gather{base(R.region, 0), R.keys, R.kv_len, R.d * R.k_bits}, R.k_passes);
    if (R.summarize) gathers.push_back(Gather{base(R.region, 3), R.q_rows, R.q_rows, R.d * R.q_bits});
    fetched_bits += double(R.keys) * R.d * R.k_bits * R.k_passes +
                    (R.summarize ? double(R.q_rows) * R.d * R.q_bits : 0.0);
    buffer_elements_written += double(R.keys) * R.d * R.k_passes;
    fetcher_->start(r, JobKind::kKeys, gathers);
    // Generation appends the new token's K and V (one each per K/V head) to the cache.
    if (!R.summarize) {
      write(r, 1, R.d * (R.k_bits + R.k_lsb_bits));
      write(r, 1, R.d * R.v_bits);
    }
  }
}

// Q.K for `rows` query rows over the fetched keys, then softmax; returns when the probabilities are out.
Cycle Accelerator::attention(const Request& R, const FetchJob& job, uint64_t rows) {
  const uint64_t M = cfg_.multipliers_per_array;
  const uint64_t lanes = cfg_.lanes();
  const double mac = double(rows) * R.keys * R.d;
  macs += mac;
  scores += double(rows) * R.keys;
  const auto [qs, qe] = qk_.stream(job.first, job.last + 1, ceil_div(uint64_t(mac), M));
  const uint64_t b = ceil_div(rows * R.keys, lanes), b_row = ceil_div(R.keys, lanes);
  const auto [ss, se] = softmax_.stream(qs + cfg_.qk_latency, qe + cfg_.qk_latency, b);
  (void)ss;
  return se + cfg_.softmax_latency + b_row;  // drain: pipeline, then the last row's normalisation pass
}

void Accelerator::on_keys(uint32_t r, const FetchJob& job) {
  const Request& R = requests_[r];
  useful_macs += double(R.q_rows) * R.keys * R.d;
  const Cycle probs = attention(R, job, R.q_rows);
  const uint64_t lanes = cfg_.lanes();
  // The requant decision needs the maximum over the whole row: a max tree over the lanes after the last score.
  const auto [ds, de] = requant_.stream(probs - std::min<Cycle>(probs, ceil_div(R.q_rows * R.keys, lanes)), probs,
                                        ceil_div(R.q_rows * R.keys, lanes));
  (void)ds;
  queue().schedule(std::max(now(), de + ceil_log2(lanes) + 1), this, kDecision, r);
}

void Accelerator::on_lsb(uint32_t r, const FetchJob& job) {
  const Request& R = requests_[r];
  const Cycle probs = attention(R, job, R.refetch_rows);  // only the flat rows are recomputed
  queue().schedule(std::max(now(), probs), this, kProbsReady, r);
}

void Accelerator::probs_ready(uint32_t r) {
  const Request& R = requests_[r];
  const Cycle t = now();
  // The key buffer is released once the final probabilities exist (StageRequantizeOrRelease).
  key_slots_free_ += R.key_slots;
  --key_allocs_;
  try_issue();
  const uint64_t stream = ceil_div(R.q_rows * R.keys, cfg_.lanes());
  const Cycle in_first = t - std::min<Cycle>(t, stream);

  Cycle importance_end = t;
  if (R.accumulate || R.rescale) {
    const uint64_t adds = (R.accumulate ? R.q_rows * R.keys : 0) + (R.rescale ? R.kv_len : 0);
    importance_adds += double(adds);
    importance_end = importance_.stream(in_first, t, ceil_div(adds, cfg_.importance_lanes)).second;
  }
  // Global cascade top-k over the accumulated importance: tokens (all seen so far when generating, the
  // survivors when summarizing) or heads. One that keeps every entry (k >= n) selects nothing: it costs
  // nothing and the next layer does not wait for it. One that prunes holds the next layer (of this sequence)
  // until it is done, on top of the layer's own outputs.
  const uint64_t n = R.topk == TopkKind::kHead ? R.heads_in_layer : (R.summarize ? R.keys : R.kv_len);
  if (R.topk != TopkKind::kNone && R.topk_k < n) {
    const auto qs = cascade_topk_.cycles(n, R.topk_k);
    topk_elements += double(n);
    const Cycle end = importance_.stream(importance_end, importance_end, qs.cycles).second;
    groups_[R.group].topk_pending = true;
    queue().schedule(std::max(t, end), this, kTopkDone, r);
  }
  Cycle values_at = t;
  if (R.values < R.keys && R.values > 0) {
    // Local value pruning: one quick-select per query row.
    const auto qs = local_topk_.cycles(R.keys, R.values);
    topk_elements += double(R.q_rows) * R.keys;
    if (cfg_.topk_pipelined) {
      // Two pipelined stages (spatten-original.md section 7: the 16-comparator engine is sized to the Q.K rate
      // and more comparators give no further gain, so the engine must not serialize whole rows; section 4.2.4:
      // P = 2 x numSoftMaxUnit, so the comparators outpace the 8 probabilities/cycle of the softmax).
      // Stage 1 runs the first partition pass as the probabilities stream out of the softmax (pivot = an early
      // element, statistically the same as the hashed pivot on these data) into one of two candidate FIFO
      // pairs; stage 2 runs the remaining, shrinking passes on the other pair. So the refinement passes of
      // head i overlap the Q.K/softmax/first pass of head i+1 (the old model kept one engine busy for all
      // passes of a row, which serialized rows behind the top-k; the RTL simulation hid this with a
      // latency-only dummy top-k).
      const uint64_t pass1 = qs.cycles ? std::min<uint64_t>(qs.cycles, ceil_div(R.keys, cfg_.topk_parallelism) + 3) : 0;
      const uint64_t rest = qs.cycles - pass1;
      const auto [as, ae] = topk_input_.stream(in_first, t, R.q_rows * pass1);
      values_at = topk_.stream(as + pass1, ae + rest, R.q_rows * rest).second;
    } else {
      // The RTL QuickSelect FSM (QuickSelect.scala / TopK.scala): Fill the candidate FIFO at the input rate
      // (the pivot is sampled while filling, so no pass can start before the row is in), Run every pass,
      // then hold the k-th value until the order-preserving filter has drained the data FIFO; only then does
      // the FSM return to Fill for the next row, so rows serialize on the engine.
      const uint64_t io = ceil_div(R.keys, cfg_.lanes());
      const uint64_t per_row = io + qs.cycles + io;
      values_at = topk_.stream(in_first, t + qs.cycles + io, R.q_rows * per_row).second;
    }
  }
  queue().schedule(std::max(t, values_at), this, kIssueValues, r);
}

bool Accelerator::issue_values(uint32_t r) {
  const Request& R = requests_[r];
  if (value_allocs_ >= cfg_.max_live_requests || value_slots_free_ < R.value_slots) return false;
  ++value_allocs_;
  value_slots_free_ -= R.value_slots;
  fetched_bits += double(R.values) * R.d * R.v_bits * R.v_passes;
  buffer_elements_written += double(R.values) * R.d * R.v_passes;
  fetcher_->start(r, JobKind::kValues,
                  repeated(Gather{base(R.region, 2), R.values, R.kv_len, R.d * R.v_bits}, R.v_passes));
  return true;
}

void Accelerator::on_values(uint32_t r, const FetchJob& job) {
  const Request& R = requests_[r];
  const double mac = double(R.q_rows) * R.values * R.d;
  macs += mac;
  useful_macs += mac;
  const Cycle end = pv_.stream(job.first, job.last + 1, ceil_div(uint64_t(mac), cfg_.multipliers_per_array)).second;
  if (R.summarize) write(r, R.q_rows, R.d * cfg_.datapath_bits);  // the attention output
  queue().schedule(std::max(now(), end + cfg_.pv_latency), this, kDone, r);
}

struct Built {
  std::vector<Request> requests;
  std::vector<Group> groups;
  uint64_t max_region_bytes = 0;
};

// How the fetcher moves one row's K and V (TestSpAtten's request mapping, spatten-original.md section 4.3;
// docs/hwsim.md "Bit widths"). The MatrixFetcher has only the (4,1), (6,2) and (8,1) profiles, so:
// - a width of at most 8 bits is stored in the next profile up (5 -> 6, 7 -> 8);
// - keys wider than 8 bits (and unquantized keys, "-1", which TestSpAtten treats as 12-bit) take an 8-bit MSB
//   pass plus a forced LSB pass of the remaining bits (4 for 9..12, the RTL's requantBitCount) that recomputes
//   Q.K for every query row;
// - values of 9..12 bits (and unquantized values) are fetched at 8 bits, as TestSpAtten maps -1/10/12;
// - beyond the 12-bit datapath (an fp16/fp32 ablation, not RTL) the extra bits are fetched in whole bytes.
// So "-1" is exactly an explicit 12 for keys and values, and bytes and work never shrink as bits grow.
uint32_t profile_bits(uint32_t bits) {
  if (bits == 0) return 0;
  if (bits <= 4) return 4;
  if (bits <= 6) return 6;
  return (bits + 7) / 8 * 8;
}

struct FetchWidths {
  uint32_t k_bits, k_lsb_bits, v_bits, q_bits;
  uint64_t refetch_rows;
};

FetchWidths fetch_widths(const TraceRow& row, const HwConfig& cfg) {
  const uint32_t full = cfg.datapath_bits;
  const uint32_t k = row.k_msb_bits < 0 ? full : uint32_t(row.k_msb_bits);
  const uint32_t v = row.v_bits < 0 ? full : uint32_t(row.v_bits);
  FetchWidths w{};
  w.q_bits = row.q_bits < 0 ? full : uint32_t(row.q_bits);
  w.v_bits = v > 8 && v <= full ? 8 : profile_bits(v);
  if (k > 8) {
    w.k_bits = 8;
    w.k_lsb_bits = k <= full ? 4 : profile_bits(k - 8);
    w.refetch_rows = row.query_rows;
  } else {
    w.k_bits = profile_bits(k);
    w.k_lsb_bits = row.k_lsb_bits > 0 ? uint32_t(row.k_lsb_bits) : 0;
    w.refetch_rows = w.k_lsb_bits ? row.lsb_refetch_rows : 0;
  }
  return w;
}

// Capacity: the K (V) buffer holds `capacity` vectors. Vectors that fit are fetched once. When they do not,
// the request runs in query tiles of at most `capacity` rows and every tile streams all of them again
// (docs/hwsim.md "Capacity": the RTL never sees this case; the tile size is our assumption).
uint64_t tile_passes(uint64_t vectors, uint64_t q_rows, uint64_t capacity) {
  if (vectors <= capacity || capacity == 0) return 1;
  return std::max<uint64_t>(1, ceil_div(q_rows, capacity));
}

// Groups in issue order. A batch (several sequences) is interleaved layer by layer within each forward, so one
// sequence's layer runs while another's finishes; one sequence's groups keep their order.
std::vector<std::pair<size_t, size_t>> ordered_groups(const Trace& trace) {
  std::vector<std::pair<size_t, size_t>> spans;
  bool batched = false;
  for (size_t i = 0; i < trace.rows.size();) {
    const size_t j = layer_group_end(trace.rows, i);
    batched = batched || trace.rows[i].sequence != trace.rows[0].sequence;
    spans.emplace_back(i, j);
    i = j;
  }
  if (!batched) return spans;
  // A forward: consecutive groups of one (stage, step) whose sequence numbers do not go down.
  size_t a = 0;
  while (a < spans.size()) {
    size_t b = a + 1;
    while (b < spans.size()) {
      const TraceRow& prev = trace.rows[spans[b - 1].first];
      const TraceRow& cur = trace.rows[spans[b].first];
      if (cur.stage != prev.stage || cur.step != prev.step || cur.sequence < prev.sequence) break;
      ++b;
    }
    std::stable_sort(spans.begin() + a, spans.begin() + b, [&](const auto& x, const auto& y) {
      const TraceRow& rx = trace.rows[x.first];
      const TraceRow& ry = trace.rows[y.first];
      return std::tie(rx.layer, rx.sequence) < std::tie(ry.layer, ry.sequence);
    });
    a = b;
  }
  return spans;
}

Built build_requests(const Trace& trace, const HwConfig& cfg) {
  Built b;
  uint32_t max_head = 0;
  for (const auto& row : trace.rows) max_head = std::max(max_head, row.head);
  // GQA: query heads of one group read the same K/V; with gqa_shared_kv they form one request (one fetch).
  const uint32_t group_size = cfg.gqa_shared_kv ? query_heads_per_kv_head(trace) : 1;
  const uint64_t slots = cfg.buffer_key_slots();
  std::map<uint32_t, int64_t> last_group_of;  // sequence -> its latest group with work
  for (const auto& [i, j] : ordered_groups(trace)) {
    const TraceRow& first = trace.rows[i];
    uint64_t heads = 0;
    for (size_t k = i; k < j; ++k) heads = std::max<uint64_t>(heads, trace.rows[k].head + 1);
    const uint32_t group = uint32_t(b.groups.size());
    Group G;
    G.layer = first.layer;
    G.sequence = first.sequence;
    const auto prev = last_group_of.find(first.sequence);
    G.depends_on = prev == last_group_of.end() ? -1 : prev->second;
    const size_t group_start = b.requests.size();
    std::map<uint32_t, size_t> request_of_kv_head;
    for (size_t k = i; k < j; ++k) {
      const TraceRow& row = trace.rows[k];
      if (!row.head_kept) {
        // A pruned head does no work, but a cascade top-k recorded on it still happens (after the layer).
        if (row.topk_kind != TopkKind::kNone) {
          if (b.requests.size() > group_start && b.requests.back().topk == TopkKind::kNone) {
            b.requests.back().topk = row.topk_kind;
            b.requests.back().topk_k = uint64_t(std::max<int64_t>(0, row.topk_k));
          }
        }
        continue;
      }
      const FetchWidths w = fetch_widths(row, cfg);
      const uint32_t kv_head = row.head / group_size;
      const auto shared = request_of_kv_head.find(kv_head);
      if (shared != request_of_kv_head.end()) {
        // Another query head of the same K/V head: its queries join the request; K/V are fetched once.
        Request& R = b.requests[shared->second];
        R.q_rows += row.query_rows;
        R.keys = std::max(R.keys, row.keys_fetched);
        R.values = std::max(R.values, row.values_fetched);
        R.refetch_rows += w.refetch_rows;
        R.accumulate = R.accumulate || row.accumulate_importance;
        R.rescale = R.rescale || row.rescale_importance;
        if (row.topk_kind != TopkKind::kNone) {
          R.topk = row.topk_kind;
          R.topk_k = uint64_t(std::max<int64_t>(0, row.topk_k));
        }
        continue;
      }
      request_of_kv_head[kv_head] = b.requests.size();
      Request R;
      R.group = group;
      R.layer = row.layer;
      R.summarize = row.stage == Stage::kSummarize;
      R.q_rows = row.query_rows;
      R.keys = row.keys_fetched;
      R.values = row.values_fetched;
      R.kv_len = row.kv_len;
      R.d = row.d_head;
      R.k_bits = w.k_bits;
      R.k_lsb_bits = w.k_lsb_bits;
      R.refetch_rows = w.refetch_rows;
      R.v_bits = w.v_bits;
      R.q_bits = w.q_bits;
      R.accumulate = row.accumulate_importance;
      R.rescale = row.rescale_importance;
      R.topk = row.topk_kind;
      R.topk_k = uint64_t(std::max<int64_t>(0, row.topk_k));
      R.heads_in_layer = heads;
      R.region = (uint64_t(row.sequence) * 4096 + row.layer) * (max_head + 1) + kv_head;
      b.max_region_bytes = std::max(b.max_region_bytes, std::max(R.kv_len, R.q_rows) * R.d * 4);
      b.requests.push_back(R);
    }
    if (b.requests.size() == group_start) continue;  // every head pruned: no work, nothing to wait for
    for (size_t r = group_start; r < b.requests.size(); ++r) {
      Request& R = b.requests[r];
      const uint64_t slots_per_vector = ceil_div(R.d, 64);
      const uint64_t capacity = slots / slots_per_vector;
      R.k_passes = tile_passes(R.keys, R.q_rows, capacity);
      R.v_passes = tile_passes(R.values, R.q_rows, capacity);
      R.lsb_refetches_msb = R.keys > capacity && R.refetch_rows && R.k_lsb_bits;
      R.key_slots = std::min(slots, std::max<uint64_t>(1, R.keys * slots_per_vector));
      R.value_slots = std::min(slots, std::max<uint64_t>(1, R.values * slots_per_vector));
    }
    G.remaining = b.requests.size() - group_start;
    last_group_of[first.sequence] = group;
    b.groups.push_back(G);
  }
  return b;
}

uint64_t next_pow2(uint64_t v) {
  uint64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace

Report simulate_once(const Trace& input, const HwConfig& cfg, const SimOptions& options) {
  validate_trace(input);
  const Trace trace = cfg.dense ? make_dense(input) : input;
  Built built = build_requests(trace, cfg);
  std::vector<Group> group_info = built.groups;
  const uint32_t groups = uint32_t(group_info.size());

  EventQueue q;
  Accelerator acc(q, cfg, std::move(built.requests), std::move(built.groups));
  const uint64_t row_span = uint64_t(cfg.dram.channels) * cfg.dram.pseudo_channels * cfg.dram.row_bytes;
  acc.region_stride = next_pow2(std::max<uint64_t>(built.max_region_bytes, 16 * row_span));
  acc.region_stagger = row_span;

  std::vector<std::unique_ptr<HbmChannel>> channels;
  std::vector<Link<Run>*> links;
  KvFetcher* fetcher_ptr = nullptr;
  // The fetcher needs the crossbar and the crossbar the channels; the channels report to the fetcher.
  struct SinkProxy : RunSink {
    KvFetcher** target;
    void run_scheduled(const Run& r, Cycle a, Cycle b) override { (*target)->run_scheduled(r, a, b); }
  } proxy;
  proxy.target = &fetcher_ptr;
  for (uint32_t c = 0; c < cfg.dram.channels; ++c) {
    channels.push_back(std::make_unique<HbmChannel>("hbm2-channel", q, cfg, &proxy));
    channels.back()->record_commands(options.dram_commands != nullptr);
    links.push_back(&channels.back()->input());
  }
  Crossbar xbar("crossbar", q, cfg.fetch_channels, links);
  KvFetcher fetcher(q, cfg, xbar, acc);
  fetcher_ptr = &fetcher;
  acc.attach(&fetcher);

  q.schedule(0, &acc, Accelerator::kTryIssue);
  q.run();
  const Cycle end = std::max<Cycle>(q.now(), 1);

  Report rep;
  rep.preset = cfg.name;
  rep.mode = cfg.dense ? "dense" : "as traced";
  rep.trace_source = input.source;
  rep.clock_hz = cfg.clock_ghz * 1e9;
  rep.cycles = end;
  rep.seconds = double(end) / rep.clock_hz;
  rep.events = q.events_handled();
  rep.peak_dram_bytes_per_second = cfg.peak_dram_bytes_per_cycle() * rep.clock_hz;
  rep.peak_macs_per_second = cfg.peak_macs_per_cycle() * rep.clock_hz;
  double activates = 0, refreshes = 0, active_cycles = 0, tx = 0;
  double xbar_busy = 0, channel_busy = 0;
  for (auto& ch : channels) {
    ch->finish(end);
    const auto& s = ch->stats();
    rep.channels.push_back(s);
    rep.dram_bytes_read += s.bytes_read;
    rep.dram_bytes_written += s.bytes_written;
    activates += double(s.activates);
    refreshes += double(s.refreshes);
    active_cycles += s.active_standby_cycles;
    tx += double(s.transactions);
    channel_busy += s.data_bus_cycles;
    if (options.dram_commands) options.dram_commands->push_back(ch->commands());
  }
  xbar_busy = xbar.busy_cycles();
  rep.dram_bytes_refetched = uint64_t(acc.refetched_bytes);
  rep.macs = acc.macs;
  rep.useful_macs = acc.useful_macs;
  rep.flops = 2 * acc.useful_macs;
  rep.flops_per_second = rep.flops / rep.seconds;

  // Per-layer: each (stage, step, layer) group is charged the time from the previous group's end to its own.
  uint32_t layers = 0;
  for (const Group& G : group_info) layers = std::max(layers, G.layer + 1);
  rep.layers.resize(layers);
  for (uint32_t l = 0; l < layers; ++l) rep.layers[l].layer = l;
  Cycle horizon = 0;
  for (uint32_t g = 0; g < groups; ++g) {
    const Cycle e = acc.group_end_[g];
    auto& L = rep.layers[group_info[g].layer];
    if (e > horizon) {
      L.cycles += double(e - horizon);
      horizon = e;
    }
    L.dram_bytes_read += acc.group_bytes_[g];
  }
  // Per sequence of a batch: when its last layer finished and what it read.
  std::map<uint32_t, SequenceStats> per_sequence;
  for (uint32_t g = 0; g < groups; ++g) {
    SequenceStats& S = per_sequence[group_info[g].sequence];
    S.sequence = group_info[g].sequence;
    S.cycles = std::max<uint64_t>(S.cycles, acc.group_end_[g]);
    S.dram_bytes_read += acc.group_bytes_[g];
  }
  for (const auto& row : trace.rows)
    if (row.head_kept) ++per_sequence[row.sequence].requests;
  for (const auto& kv : per_sequence) rep.sequences.push_back(kv.second);
  for (const auto& row : trace.rows) {
    if (!row.head_kept) continue;
    auto& L = rep.layers[row.layer];
    ++L.requests;
    ++rep.requests;
    L.keys_fetched += row.keys_fetched;
    L.values_fetched += row.values_fetched;
    L.lsb_refetch_rows += row.k_lsb_bits > 0 ? row.lsb_refetch_rows : 0;
    L.macs += double(row.query_rows) * (row.keys_fetched + row.values_fetched) * row.d_head;
  }

  const double T = double(end);
  for (const StreamUnit* u : acc.units()) rep.busy_fraction[u->name()] = std::min(1.0, u->busy_cycles() / T);
  rep.busy_fraction["request-scheduler"] = std::min(1.0, acc.busy_cycles() / T);
  rep.busy_fraction["crossbar"] = std::min(1.0, xbar_busy / (T * cfg.dram.channels));
  rep.busy_fraction["hbm2-channel"] = std::min(1.0, channel_busy / (T * cfg.dram.channels));
  rep.busy_fraction["kv-fetcher"] = std::min(1.0, fetcher.busy_cycles() / (T * cfg.fetch_channels));

  // Energy: per-event energies x event counts, plus static power x time (energy-model.md section 6 rules).
  const EnergyTable& e = cfg.energy;
  const double pj = 1e-12;
  auto& parts = rep.energy.parts;
  parts["mac"] = acc.macs * (e.mac_12b + e.mac_overhead) * pj;
  parts["kv_buffer_read"] = acc.macs / 512.0 * e.kv_buffer_line_read * pj;  // a 512-element line feeds 512 MACs
  parts["kv_buffer_write"] = acc.buffer_elements_written / 512.0 * e.kv_buffer_line_write * pj;
  parts["fetch_fifo"] = acc.fetched_bits / 512.0 * (e.fifo_read_512b + e.fifo_write_512b) * pj;
  parts["softmax"] = acc.scores * (e.softmax_exp + e.softmax_elem_misc) * pj;
  parts["topk"] = acc.topk_elements * e.topk_element * pj;
  parts["dram_read"] = double(rep.dram_bytes_read) / 64.0 * e.dram_read_64B * pj;
  parts["dram_write"] = double(rep.dram_bytes_written) / 64.0 * e.dram_write_64B * pj;
  parts["dram_activate"] = activates * e.dram_activate * pj;
  parts["dram_refresh"] = refreshes * e.dram_refresh * pj;
  const double channel_seconds = T * cfg.dram.channels / rep.clock_hz;
  const double active_seconds = active_cycles / rep.clock_hz;
  parts["dram_standby"] = (active_seconds * e.dram_active_standby_mw +
                           (channel_seconds - active_seconds) * e.dram_precharge_standby_mw) * 1e-3;
  parts["leakage"] = (e.leakage_logic_mw + e.leakage_sram_mw) * 1e-3 * rep.seconds;
  rep.energy_joules = rep.energy.total();
  rep.power_watts = rep.energy_joules / rep.seconds;
  return rep;
}

Report simulate(const Trace& trace, const HwConfig& cfg, bool dense_baseline) {
  Report rep = simulate_once(trace, cfg);
  if (dense_baseline) {
    HwConfig dense = cfg;
    dense.dense = true;
    rep.dense = std::make_shared<Report>(simulate_once(trace, dense));
  }
  return rep;
}

}  // namespace spatten::hwsim
