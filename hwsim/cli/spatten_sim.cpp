// spatten-sim: replay a trace (official SpAtten workload CSV or native spatten trace) on a preset.
// Bad input prints one clear error line and exits 2.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "config.h"
#include "errors.h"
#include "registry.h"
#include "simulator.h"
#include "trace.h"

namespace fs = std::filesystem;
using namespace spatten::hwsim;

namespace {

const char* kUsage =
    "usage: spatten-sim [--preset NAME | --preset-file PATH] [--preset-dir DIR] [--set SECTION.KEY=VALUE]...\n"
    "                   [--json PATH|-] [--no-dense] TRACE\n"
    "       spatten-sim --list            components and what each models\n"
    "       spatten-sim --list-presets    presets found\n"
    "       spatten-sim --version\n";

std::vector<std::string> preset_dirs(const std::vector<std::string>& extra) {
  std::vector<std::string> dirs = extra;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) dirs.push_back((exe.parent_path() / "presets").string());  // installed next to the binary
  for (const auto& d : default_preset_dirs()) dirs.push_back(d);
  return dirs;
}

void write_atomically(const std::string& path, const std::string& text) {
  const fs::path target(path);
  const fs::path tmp = target.parent_path() / ("." + target.filename().string() + "." + std::to_string(getpid()) + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
    out << text;
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, target);
}

void print_table(const Report& r) {
  std::printf("preset %s (%s), trace %s\n", r.preset.c_str(), r.mode.c_str(), r.trace_source.c_str());
  std::printf("  %-28s %16llu\n", "cycles", (unsigned long long)r.cycles);
  std::printf("  %-28s %16.6g s\n", "latency", r.seconds);
  std::printf("  %-28s %16llu\n", "DRAM bytes read", (unsigned long long)r.dram_bytes_read);
  std::printf("  %-28s %16llu\n", "DRAM bytes written", (unsigned long long)r.dram_bytes_written);
  std::printf("  %-28s %16llu\n", "  of the reads, refetched", (unsigned long long)r.dram_bytes_refetched);
  std::printf("  %-28s %16llu / %llu\n", "row hits / misses", (unsigned long long)r.row_hits(),
              (unsigned long long)r.row_misses());
  std::printf("  %-28s %16.4g TFLOP/s\n", "effective throughput", r.flops_per_second / 1e12);
  std::printf("  %-28s %16.4g J (%.3g W)\n", "energy", r.energy_joules, r.power_watts);
  if (r.dense) {
    std::printf("  %-28s %16.3fx\n", "speedup vs dense", double(r.dense->cycles) / double(r.cycles));
    std::printf("  %-28s %16.3fx\n", "DRAM reduction vs dense", double(r.dense->dram_bytes()) / double(r.dram_bytes()));
    std::printf("  %-28s %16.3fx\n", "energy reduction vs dense", r.dense->energy_joules / r.energy_joules);
  }
  std::printf("\n  %-24s %s\n", "module", "busy");
  for (const auto& kv : r.busy_fraction) std::printf("  %-24s %6.1f %%\n", kv.first.c_str(), 100 * kv.second);
  std::printf("\n  %-24s %s\n", "energy part", "joules");
  for (const auto& kv : r.energy.parts) std::printf("  %-24s %.4g\n", kv.first.c_str(), kv.second);
  std::printf("\n  %5s %12s %8s %12s %12s %14s\n", "layer", "cycles", "heads", "keys", "values", "DRAM bytes");
  for (const auto& l : r.layers)
    std::printf("  %5u %12.0f %8llu %12llu %12llu %14llu\n", l.layer, l.cycles, (unsigned long long)l.requests,
                (unsigned long long)l.keys_fetched, (unsigned long long)l.values_fetched,
                (unsigned long long)l.dram_bytes_read);
  if (r.sequences.size() > 1) {
    std::printf("\n  %8s %12s %8s %14s\n", "sequence", "done at", "heads", "DRAM bytes");
    for (const auto& q : r.sequences)
      std::printf("  %8u %12llu %8llu %14llu\n", q.sequence, (unsigned long long)q.cycles,
                  (unsigned long long)q.requests, (unsigned long long)q.dram_bytes_read);
  }
  std::printf("\n  %7s %14s %10s %10s %10s\n", "channel", "bytes read", "row hits", "misses", "refreshes");
  for (size_t c = 0; c < r.channels.size(); ++c)
    std::printf("  %7zu %14llu %10llu %10llu %10llu\n", c, (unsigned long long)r.channels[c].bytes_read,
                (unsigned long long)r.channels[c].row_hits, (unsigned long long)r.channels[c].row_misses,
                (unsigned long long)r.channels[c].refreshes);
}

int run(int argc, char** argv) {
  std::string preset = "spatten", preset_file, json, trace_path;
  std::vector<std::string> extra_dirs;
  std::map<std::string, std::vector<std::string>> overrides;  // section -> "key: value" lines
  bool dense = true, list = false, list_presets_flag = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--preset") preset = value();
    else if (a == "--preset-file") preset_file = value();
    else if (a == "--preset-dir") extra_dirs.push_back(value());
    else if (a == "--json") json = value();
    else if (a == "--no-dense") dense = false;
    else if (a == "--set") {
      const std::string kv = value();
      const auto dot = kv.find('.'), eq = kv.find('=');
      if (dot == std::string::npos || eq == std::string::npos || eq < dot)
        throw std::invalid_argument("--set wants SECTION.KEY=VALUE, got " + kv);
      overrides[kv.substr(0, dot)].push_back(kv.substr(dot + 1, eq - dot - 1) + ": " + kv.substr(eq + 1));
    }
    else if (a == "--list") list = true;
    else if (a == "--list-presets") list_presets_flag = true;
    else if (a == "--version") {
      std::cout << "spatten-sim " SPATTEN_VERSION "\n";
      return 0;
    }
    else if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (!a.empty() && a[0] == '-') throw std::invalid_argument("unknown option " + a);
    else if (trace_path.empty()) trace_path = a;
    else throw std::invalid_argument("more than one trace given");
  }
  const auto dirs = preset_dirs(extra_dirs);
  if (list) {
    for (const auto& c : builtin_components().components())
      std::printf("%-24s %s\n", c.name.c_str(), c.description.c_str());
    return 0;
  }
  if (list_presets_flag) {
    for (const auto& n : list_presets(dirs)) std::printf("%s\n", n.c_str());
    return 0;
  }
  if (trace_path.empty()) throw std::invalid_argument("no trace given");
  std::string yaml;
  for (const auto& [section, lines] : overrides) {
    yaml += section + ":\n";
    for (const auto& line : lines) yaml += "  " + line + "\n";
  }
  const HwConfig cfg = preset_file.empty() ? load_preset(preset, dirs, yaml) : load_preset_file(preset_file, dirs, yaml);
  const Trace trace = read_trace_file(trace_path);
  const Report report = simulate(trace, cfg, dense);
  if (json == "-") {
    std::cout << report.to_json() << "\n";
  } else {
    print_table(report);
    if (!json.empty()) write_atomically(json, report.to_json() + "\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::invalid_argument& err) {
    std::cerr << "spatten-sim: " << err.what() << "\n" << kUsage;
    return 2;
  } catch (const std::exception& err) {
    std::cerr << "spatten-sim: error: " << err.what() << "\n";
    return 2;
  }
}
