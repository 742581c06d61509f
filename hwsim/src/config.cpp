#include "config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>

#include "errors.h"

namespace fs = std::filesystem;

namespace spatten::hwsim {

namespace {

// Child fields override the base's, recursively for maps.
YAML::Node merge(const YAML::Node& base, const YAML::Node& child) {
  if (!base.IsMap() || !child.IsMap()) return YAML::Clone(child);
  YAML::Node out = YAML::Clone(base);
  for (const auto& kv : child) {
    const std::string key = kv.first.as<std::string>();
    out[key] = out[key] ? merge(out[key], kv.second) : YAML::Clone(kv.second);
  }
  return out;
}

YAML::Node parse_file(const std::string& path) {
  try {
    YAML::Node node = YAML::LoadFile(path);
    if (!node.IsMap()) throw ConfigError("preset file " + path + " is not a YAML mapping");
    return node;
  } catch (const YAML::BadFile&) {
    throw ConfigError("preset file not found or unreadable: " + path);
  } catch (const YAML::Exception& err) {
    throw ConfigError("preset file " + path + ": " + err.what());
  }
}

std::vector<std::string> preset_files(const std::vector<std::string>& dirs) {
  std::vector<std::string> files;
  for (const auto& d : dirs) {
    std::error_code ec;
    if (!fs::is_directory(d, ec)) continue;
    std::vector<std::string> here;
    for (const auto& entry : fs::directory_iterator(d, ec))
      if (entry.path().extension() == ".yaml") here.push_back(entry.path().string());
    std::sort(here.begin(), here.end());
    files.insert(files.end(), here.begin(), here.end());
  }
  return files;
}

std::string name_of(const YAML::Node& node, const std::string& path) {
  if (!node["name"]) throw ConfigError("preset file " + path + " has no `name:` field");
  return node["name"].as<std::string>();
}

YAML::Node resolve(const std::string& path, const std::vector<std::string>& dirs, std::set<std::string>& seen);

YAML::Node find_by_name(const std::string& name, const std::vector<std::string>& dirs,
                        std::set<std::string>& seen) {
  for (const auto& file : preset_files(dirs)) {
    YAML::Node node = parse_file(file);
    if (name_of(node, file) == name) return resolve(file, dirs, seen);
  }
  std::string known;
  for (const auto& n : list_presets(dirs)) known += (known.empty() ? "" : ", ") + n;
  throw ConfigError("unknown preset '" + name + "' (known: " + (known.empty() ? "none found" : known) + ")");
}

YAML::Node resolve(const std::string& path, const std::vector<std::string>& dirs, std::set<std::string>& seen) {
  YAML::Node node = parse_file(path);
  const std::string name = name_of(node, path);
  if (!seen.insert(name).second) throw ConfigError("preset '" + name + "' inherits from itself via `base:`");
  if (node["base"] && !node["base"].IsNull()) {
    std::vector<std::string> search{fs::path(path).parent_path().string()};
    search.insert(search.end(), dirs.begin(), dirs.end());
    YAML::Node base = find_by_name(node["base"].as<std::string>(), search, seen);
    base.remove("dense");  // `dense` describes how a preset runs the trace; it is not inherited
    node = merge(base, node);
  }
  return node;
}

// Edit distance, for "did you mean" hints.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Top-level fields that are not parameter sections.
const std::set<std::string> kPresetFields = {"name", "base", "description", "dense"};

// Reads a required parameter; the error names the preset, the parameter and the component that needs it.
// Remembers every parameter it was asked for, so `reject_unknown` can name any key nothing reads (a typo in a
// preset or an override would otherwise be silently ignored and the run would report the unmodified preset).
class Reader {
 public:
  Reader(const YAML::Node& root, std::string preset) : root_(root), preset_(std::move(preset)) {}

  void reject_unknown() const {
    for (const auto& sec : root_) {
      const std::string section = sec.first.as<std::string>();
      if (kPresetFields.count(section)) continue;
      if (!known_.count(section)) unknown(section, section_names());
      if (!sec.second.IsMap()) throw ConfigError("preset '" + preset_ + "': section " + section + " is not a mapping");
      for (const auto& kv : sec.second) {
        const std::string key = section + "." + kv.first.as<std::string>();
        if (!known_.at(section).count(kv.first.as<std::string>())) unknown(key, parameter_names());
      }
    }
  }

  template <class T>
  T need(const std::string& section, const std::string& key, const std::string& component) const {
    known_[section].insert(key);
    const YAML::Node sec = root_[section];
    if (!sec || !sec[key])
      throw ConfigError("preset '" + preset_ + "': parameter " + section + "." + key + " is missing (needed by " +
                        component + ")");
    try {
      return sec[key].as<T>();
    } catch (const YAML::Exception&) {
      throw ConfigError("preset '" + preset_ + "': parameter " + section + "." + key + " has a bad value (" +
                        component + ")");
    }
  }
  uint32_t positive(const std::string& section, const std::string& key, const std::string& component) const {
    const auto v = need<int64_t>(section, key, component);
    if (v <= 0 || v > (int64_t(1) << 30))
      throw ConfigError("preset '" + preset_ + "': " + section + "." + key + " = " + std::to_string(v) +
                        " must be a positive integer (" + component + ")");
    return uint32_t(v);
  }
  double nonneg(const std::string& section, const std::string& key, const std::string& component) const {
    const auto v = need<double>(section, key, component);
    if (!(v >= 0))
      throw ConfigError("preset '" + preset_ + "': " + section + "." + key + " must be >= 0 (" + component + ")");
    return v;
  }

 private:
  std::vector<std::string> section_names() const {
    std::vector<std::string> out;
    for (const auto& kv : known_) out.push_back(kv.first);
    return out;
  }
  std::vector<std::string> parameter_names() const {
    std::vector<std::string> out;
    for (const auto& kv : known_)
      for (const auto& key : kv.second) out.push_back(kv.first + "." + key);
    return out;
  }
  [[noreturn]] void unknown(const std::string& name, const std::vector<std::string>& valid) const {
    std::string best;
    size_t best_d = SIZE_MAX;
    for (const auto& v : valid) {
      const size_t d = edit_distance(name, v);
      if (d < best_d) best_d = d, best = v;
    }
    throw ConfigError("preset '" + preset_ + "': unknown parameter " + name +
                      (best.empty() ? std::string() : " (did you mean " + best + "?)"));
  }

  const YAML::Node& root_;
  std::string preset_;
  mutable std::map<std::string, std::set<std::string>> known_;
};

HwConfig build(const YAML::Node& root, const std::string& path) {
  HwConfig c;
  c.name = name_of(root, path);
  c.description = root["description"] ? root["description"].as<std::string>() : "";
  c.dense = root["dense"] && root["dense"].as<bool>();
  const Reader r(root, c.name);
  c.clock_ghz = r.nonneg("hardware", "clock_ghz", "clock");
  if (c.clock_ghz <= 0) throw ConfigError("preset '" + c.name + "': hardware.clock_ghz must be positive");
  c.multipliers_per_array = r.positive("hardware", "multipliers_per_array", "qk-unit/pv-unit");
  c.datapath_bits = r.positive("hardware", "datapath_bits", "kv-fetcher");
  c.buffer_lines = r.positive("hardware", "buffer_lines", "request-scheduler");
  c.max_live_requests = r.positive("hardware", "max_live_requests", "request-scheduler");
  c.request_fifo_depth = r.positive("hardware", "request_fifo_depth", "request-scheduler");
  c.fetch_channels = r.positive("hardware", "fetch_channels", "crossbar");
  c.transaction_bytes = r.positive("hardware", "transaction_bytes", "kv-fetcher");
  c.topk_parallelism = r.positive("hardware", "topk_parallelism", "topk-engine");
  c.cascade_topk_parallelism = r.positive("hardware", "cascade_topk_parallelism", "importance-accumulator");
  c.topk_pipelined = r.need<bool>("hardware", "topk_pipelined", "topk-engine");
  c.qk_latency = r.positive("hardware", "qk_latency", "qk-unit");
  c.pv_latency = r.positive("hardware", "pv_latency", "pv-unit");
  c.softmax_latency = r.positive("hardware", "softmax_latency", "softmax");
  c.crossbar_latency = r.positive("hardware", "crossbar_latency", "crossbar");
  c.importance_lanes = r.positive("hardware", "importance_lanes", "importance-accumulator");
  c.gqa_shared_kv = r.need<bool>("hardware", "gqa_shared_kv", "request-scheduler");

  auto& d = c.dram;
  d.channels = r.positive("dram", "channels", "hbm2-channel");
  d.pseudo_channels = r.positive("dram", "pseudo_channels", "hbm2-channel");
  d.bank_groups = r.positive("dram", "bank_groups", "hbm2-channel");
  d.banks_per_group = r.positive("dram", "banks_per_group", "hbm2-channel");
  d.row_bytes = r.positive("dram", "row_bytes", "hbm2-channel");
  d.burst_cycles = r.positive("dram", "burst_cycles", "hbm2-channel");
  d.queue_runs = r.positive("dram", "queue_runs", "hbm2-channel");
  d.refresh = r.need<bool>("dram", "refresh", "hbm2-channel");
  auto& t = d.timing;
  const char* comp = "hbm2-channel timing";
  t.tRCD = r.positive("timing", "tRCD", comp);
  t.tRP = r.positive("timing", "tRP", comp);
  t.tRAS = r.positive("timing", "tRAS", comp);
  t.tRC = r.positive("timing", "tRC", comp);
  t.tCL = r.positive("timing", "tCL", comp);
  t.tCCD_S = r.positive("timing", "tCCD_S", comp);
  t.tCCD_L = r.positive("timing", "tCCD_L", comp);
  t.tRRD_S = r.positive("timing", "tRRD_S", comp);
  t.tRRD_L = r.positive("timing", "tRRD_L", comp);
  t.tFAW = r.positive("timing", "tFAW", comp);
  t.tRTP = r.positive("timing", "tRTP", comp);
  t.tREFI = r.positive("timing", "tREFI", comp);
  t.tRFC = r.positive("timing", "tRFC", comp);
  if (t.tRFC >= t.tREFI) throw ConfigError("preset '" + c.name + "': timing.tRFC must be below timing.tREFI");
  for (uint32_t v : {d.channels, d.pseudo_channels, d.bank_groups, d.banks_per_group})
    if (v & (v - 1)) throw ConfigError("preset '" + c.name + "': DRAM channel/bank counts must be powers of two");
  if (d.row_bytes % c.transaction_bytes || c.transaction_bytes & (c.transaction_bytes - 1))
    throw ConfigError("preset '" + c.name + "': dram.row_bytes must be a multiple of a power-of-two transaction");

  auto& e = c.energy;
  const char* en = "energy-model";
  e.mac_12b = r.nonneg("energy_pj", "mac_12b", en);
  e.mac_overhead = r.nonneg("energy_pj", "mac_overhead", en);
  e.softmax_exp = r.nonneg("energy_pj", "softmax_exp", en);
  e.softmax_elem_misc = r.nonneg("energy_pj", "softmax_elem_misc", en);
  e.topk_element = r.nonneg("energy_pj", "topk_element", en);
  e.kv_buffer_line_read = r.nonneg("energy_pj", "kv_buffer_line_read", en);
  e.kv_buffer_line_write = r.nonneg("energy_pj", "kv_buffer_line_write", en);
  e.fifo_read_512b = r.nonneg("energy_pj", "fifo_read_512b", en);
  e.fifo_write_512b = r.nonneg("energy_pj", "fifo_write_512b", en);
  e.dram_read_64B = r.nonneg("energy_pj", "dram_read_64B", en);
  e.dram_write_64B = r.nonneg("energy_pj", "dram_write_64B", en);
  e.dram_activate = r.nonneg("energy_pj", "dram_activate", en);
  e.dram_refresh = r.nonneg("energy_pj", "dram_refresh", en);
  e.dram_active_standby_mw = r.nonneg("power_mw", "dram_active_standby_per_channel", en);
  e.dram_precharge_standby_mw = r.nonneg("power_mw", "dram_precharge_standby_per_channel", en);
  e.leakage_logic_mw = r.nonneg("power_mw", "leakage_logic", en);
  e.leakage_sram_mw = r.nonneg("power_mw", "leakage_sram", en);
  r.reject_unknown();
  return c;
}

}  // namespace

std::vector<std::string> default_preset_dirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("SPATTEN_HWSIM_PRESET_DIR")) dirs.emplace_back(env);
#ifdef SPATTEN_HWSIM_SOURCE_PRESETS
  dirs.emplace_back(SPATTEN_HWSIM_SOURCE_PRESETS);
#endif
  return dirs;
}

namespace {
YAML::Node with_overrides(const YAML::Node& node, const std::string& overrides) {
  if (overrides.empty()) return node;
  YAML::Node extra;
  try {
    extra = YAML::Load(overrides);
  } catch (const YAML::Exception& err) {
    throw ConfigError(std::string("preset overrides are not valid YAML: ") + err.what());
  }
  if (extra.IsNull()) return node;
  if (!extra.IsMap()) throw ConfigError("preset overrides must be a mapping such as {hardware: {topk_parallelism: 1}}");
  for (const auto& kv : extra) {
    const std::string key = kv.first.as<std::string>();
    if (key == "name" || key == "base") throw ConfigError("preset overrides cannot change `" + key + "`");
  }
  return merge(node, extra);
}
}  // namespace

HwConfig load_preset(const std::string& name, const std::vector<std::string>& dirs, const std::string& overrides) {
  std::set<std::string> seen;
  return build(with_overrides(find_by_name(name, dirs, seen), overrides), name);
}

HwConfig load_preset_file(const std::string& path, const std::vector<std::string>& dirs, const std::string& overrides) {
  std::set<std::string> seen;
  return build(with_overrides(resolve(path, dirs, seen), overrides), path);
}

std::vector<std::string> list_presets(const std::vector<std::string>& dirs) {
  std::set<std::string> names;
  for (const auto& file : preset_files(dirs)) {
    try {
      names.insert(name_of(parse_file(file), file));
    } catch (const ConfigError&) {
      // a broken file is reported when it is loaded, not when listing
    }
  }
  return {names.begin(), names.end()};
}

}  // namespace spatten::hwsim
