#include "report.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace spatten::hwsim {

namespace {

// Minimal JSON writer: deterministic key order and number formatting (same input => same bytes).
class Json {
 public:
  void open() { sep(); out_ << '{'; first_ = true; }
  void close() { out_ << '}'; first_ = false; }
  void open_array() { sep(); out_ << '['; first_ = true; }
  void close_array() { out_ << ']'; first_ = false; }
  void key(const std::string& k) { sep(); str(k); out_ << ':'; first_ = true; }
  void value(double v) {
    sep();
    if (!std::isfinite(v)) { out_ << "null"; return; }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out_ << buf;
  }
  void value(uint64_t v) { sep(); out_ << v; }
  void value(const std::string& v) { sep(); str(v); }
  template <class T>
  void field(const std::string& k, const T& v) { key(k); value(v); }
  std::string text() const { return out_.str(); }

 private:
  void sep() {
    if (!first_) out_ << ',';
    first_ = false;
  }
  void str(const std::string& s) {
    out_ << '"';
    for (char c : s) {
      if (c == '"' || c == '\\') out_ << '\\' << c;
      else if (static_cast<unsigned char>(c) < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); out_ << b; }
      else out_ << c;
    }
    out_ << '"';
  }
  std::ostringstream out_;
  bool first_ = true;
};

void write_report(Json& j, const Report& r) {
  j.open();
  j.field("preset", r.preset);
  j.field("mode", r.mode);
  j.field("trace", r.trace_source);
  j.field("clock_hz", r.clock_hz);
  j.field("cycles", uint64_t(r.cycles));
  j.field("seconds", r.seconds);
  j.field("requests", r.requests);
  j.field("events", r.events);
  j.field("dram_bytes", r.dram_bytes());
  j.field("dram_bytes_read", r.dram_bytes_read);
  j.field("dram_bytes_written", r.dram_bytes_written);
  j.field("dram_bytes_refetched", r.dram_bytes_refetched);
  j.field("peak_dram_bytes_per_second", r.peak_dram_bytes_per_second);
  j.field("peak_macs_per_second", r.peak_macs_per_second);
  j.field("dram_bandwidth_utilization",
          r.seconds > 0 ? double(r.dram_bytes_read) / r.seconds / r.peak_dram_bytes_per_second : 0.0);
  j.field("row_hits", r.row_hits());
  j.field("row_misses", r.row_misses());
  j.field("macs", r.macs);
  j.field("useful_macs", r.useful_macs);
  j.field("flops", r.flops);
  j.field("flops_per_second", r.flops_per_second);
  j.field("mac_utilization", r.seconds > 0 ? r.macs / r.seconds / r.peak_macs_per_second : 0.0);
  j.field("energy_joules", r.energy_joules);
  j.field("power_watts", r.power_watts);
  j.key("energy_breakdown_joules");
  j.open();
  for (const auto& kv : r.energy.parts) j.field(kv.first, kv.second);
  j.close();
  j.key("busy_fraction");
  j.open();
  for (const auto& kv : r.busy_fraction) j.field(kv.first, kv.second);
  j.close();
  j.key("channels");
  j.open_array();
  for (const auto& c : r.channels) {
    j.open();
    j.field("bytes_read", c.bytes_read);
    j.field("bytes_written", c.bytes_written);
    j.field("transactions", c.transactions);
    j.field("row_hits", c.row_hits);
    j.field("row_misses", c.row_misses);
    j.field("row_conflicts", c.row_conflicts);
    j.field("activates", c.activates);
    j.field("refreshes", c.refreshes);
    j.field("busy_fraction", r.cycles ? c.data_bus_cycles / double(r.cycles) : 0.0);
    j.close();
  }
  j.close_array();
  j.key("layers");
  j.open_array();
  for (const auto& l : r.layers) {
    j.open();
    j.field("layer", uint64_t(l.layer));
    j.field("cycles", l.cycles);
    j.field("requests", l.requests);
    j.field("keys_fetched", l.keys_fetched);
    j.field("values_fetched", l.values_fetched);
    j.field("lsb_refetch_rows", l.lsb_refetch_rows);
    j.field("dram_bytes_read", l.dram_bytes_read);
    j.field("macs", l.macs);
    j.close();
  }
  j.close_array();
  j.key("sequences");
  j.open_array();
  for (const auto& q : r.sequences) {
    j.open();
    j.field("sequence", uint64_t(q.sequence));
    j.field("cycles", q.cycles);
    j.field("requests", q.requests);
    j.field("dram_bytes_read", q.dram_bytes_read);
    j.close();
  }
  j.close_array();
  if (r.dense) {
    const Report& d = *r.dense;
    j.field("speedup_vs_dense", r.cycles ? double(d.cycles) / double(r.cycles) : 0.0);
    j.field("dram_reduction_vs_dense", r.dram_bytes() ? double(d.dram_bytes()) / double(r.dram_bytes()) : 0.0);
    j.field("energy_reduction_vs_dense", r.energy_joules > 0 ? d.energy_joules / r.energy_joules : 0.0);
    j.key("dense");
    write_report(j, d);
  }
  j.close();
}

}  // namespace

uint64_t Report::row_hits() const {
  uint64_t s = 0;
  for (const auto& c : channels) s += c.row_hits;
  return s;
}

uint64_t Report::row_misses() const {
  uint64_t s = 0;
  for (const auto& c : channels) s += c.row_misses;
  return s;
}

std::string Report::to_json() const {
  Json j;
  write_report(j, *this);
  return j.text();
}

}  // namespace spatten::hwsim
