#include "registry.h"

#include <stdexcept>

namespace spatten::hwsim {

void ComponentRegistry::add(const std::string& name, const std::string& description) {
  if (name.empty()) throw std::invalid_argument("component name must not be empty");
  if (description.empty()) throw std::invalid_argument("component '" + name + "' needs a one-line description");
  if (description.find('\n') != std::string::npos)
    throw std::invalid_argument("component '" + name + "': the description must be one line");
  if (has(name)) throw std::invalid_argument("component '" + name + "' is registered twice");
  components_.push_back({name, description});
}

bool ComponentRegistry::has(const std::string& name) const {
  for (const auto& c : components_)
    if (c.name == name) return true;
  return false;
}

static ComponentRegistry make_builtin() {
  ComponentRegistry r;
  r.add("request-scheduler", "issues one request per kept head and query block, in trace order, when buffers and the cascade barrier allow");
  r.add("kv-fetcher", "turns K/V/Q fetches into 32-byte transactions (8-bit vector = 2, 4-bit LSB = 1, fused 6-bit pair = 3) grouped per DRAM row");
  r.add("crossbar", "fetch-channel x DRAM-channel address crossbar (32x16 in the full preset), round-robin per DRAM channel, 1 address/cycle per port");
  r.add("hbm2-channel", "HBM2 channel: 2 pseudo-channels x 16 banks, row-buffer state, FR-FCFS, tRCD/tRP/tRAS/tRC/tCCD/tRRD/tFAW/tRTP, all-bank refresh");
  r.add("qk-unit", "Q.K array: numMultipliers 12-bit multipliers + reduction tree, consumes keys as they arrive");
  r.add("softmax", "fixed-point softmax: dequant 7 + exp 21 + accumulate 23 + divide 29 + quantize 7 cycles, numMultipliers/64 lanes, two passes");
  r.add("requant-decision", "progressive quantization: max over the whole probability row, then LSB refetch + recompute if max < threshold");
  r.add("topk-engine", "local value pruning: quick-select k-th largest with P comparators (each pass ceil(n/P)+3 cycles; pipelined: the refinement passes), order-preserving filter");
  r.add("topk-input-pass", "first quick-select pass of the pipelined top-k engine, streaming with the probabilities (at most P per cycle) into a candidate FIFO pair");
  r.add("pv-unit", "P.V array: numMultipliers multipliers, consumes the fetched value vectors as they arrive");
  r.add("importance-accumulator", "cascade token/head importance accumulation plus the global token/head top-k that gates the next layer (untimed in the original RTL)");
  r.add("energy-model", "per-event energies (MAC, SRAM line, FIFO, softmax, top-k, DRAM burst/activate/refresh) plus static power, from the preset");
  return r;
}

const ComponentRegistry& builtin_components() {
  static const ComponentRegistry registry = make_builtin();
  return registry;
}

}  // namespace spatten::hwsim
