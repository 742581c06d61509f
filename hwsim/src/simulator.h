// Top level: replays a trace on the accelerator and reports cycles, DRAM traffic, busy fractions and energy.
#pragma once

#include <vector>

#include "config.h"
#include "dram.h"
#include "report.h"
#include "trace.h"

namespace spatten::hwsim {

struct SimOptions {
  // When set, receives every DRAM command of every channel (for timing-legality checks).
  std::vector<std::vector<DramCommand>>* dram_commands = nullptr;
};

// One run of the trace on `cfg` (cfg.dense runs it unpruned).
Report simulate_once(const Trace& trace, const HwConfig& cfg, const SimOptions& options = {});

// The run plus, when `dense_baseline`, the same hardware running the trace unpruned (Report::dense).
Report simulate(const Trace& trace, const HwConfig& cfg, bool dense_baseline = true);

}  // namespace spatten::hwsim
