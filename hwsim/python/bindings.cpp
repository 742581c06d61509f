// spatten._hwsim: the simulator for Python, without torch. Trace columns arrive as numpy arrays (no temp
// files); the report comes back as JSON text that spatten.hwsim wraps. C++ errors become Python exceptions:
// TraceError and ConfigError are ValueError subclasses.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "config.h"
#include "errors.h"
#include "registry.h"
#include "simulator.h"
#include "topk_model.h"
#include "trace.h"

namespace py = pybind11;
using namespace spatten::hwsim;

namespace {

template <class T>
py::array_t<T, py::array::c_style | py::array::forcecast> column(const py::dict& cols, const char* name, size_t n) {
  if (!cols.contains(name)) throw TraceError(std::string("trace columns lack '") + name + "'");
  auto arr = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(cols[name]);
  if (!arr) throw TraceError(std::string("column '") + name + "' is not numeric");
  if (arr.ndim() != 1 || size_t(arr.shape(0)) != n)
    throw TraceError(std::string("column '") + name + "' must be one-dimensional with " + std::to_string(n) + " rows");
  return arr;
}

// Columns: the trace columns of spatten.trace, with stage and topk_kind as small integer codes
// (stage: 0 summarize, 1 generate; topk_kind: 0 none, 1 token, 2 head).
Trace trace_from_columns(const py::dict& cols, size_t n, const std::string& meta_json) {
  Trace t;
  t.source = "columns";
  t.meta_json = meta_json;
  const auto stage = column<int64_t>(cols, "stage", n);
  const auto topk_kind = column<int64_t>(cols, "topk_kind", n);
  const auto threshold = column<double>(cols, "threshold", n);
  // Trace v2: which sequence of a batch each row belongs to (absent: one sequence).
  const bool has_sequence = cols.contains("sequence");
  py::array_t<int64_t, py::array::c_style | py::array::forcecast> sequence;
  if (has_sequence) sequence = column<int64_t>(cols, "sequence", n);
  const char* ints[] = {"step", "layer", "head", "d_head", "query_rows", "kv_len", "keys_fetched", "values_fetched",
                        "k_msb_bits", "k_lsb_bits", "q_bits", "v_bits", "lsb_refetch_rows", "topk_k"};
  std::vector<py::array_t<int64_t, py::array::c_style | py::array::forcecast>> iv;
  for (const char* name : ints) iv.push_back(column<int64_t>(cols, name, n));
  const char* bools[] = {"head_kept", "accumulate_importance", "rescale_importance"};
  std::vector<py::array_t<int64_t, py::array::c_style | py::array::forcecast>> bv;
  for (const char* name : bools) bv.push_back(column<int64_t>(cols, name, n));
  t.rows.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string where = "trace row " + std::to_string(i);
    auto count = [&](int c) {
      const int64_t v = iv[c].at(i);
      if (v < 0 || uint64_t(v) > kMaxDim)
        throw TraceError(where + ": " + ints[c] + " = " + std::to_string(v) + " is outside [0, " +
                         std::to_string(kMaxDim) + "]");
      return uint64_t(v);
    };
    auto bits = [&](int c) {
      const int64_t v = iv[c].at(i);
      if (v != -1 && (v < 0 || v > 32)) throw TraceError(where + ": " + ints[c] + " must be -1 or in [0, 32]");
      return int32_t(v);
    };
    TraceRow& r = t.rows[i];
    if (has_sequence) {
      const int64_t v = sequence.at(i);
      if (v < 0 || uint64_t(v) > kMaxDim) throw TraceError(where + ": sequence = " + std::to_string(v) + " is outside [0, " +
                                                           std::to_string(kMaxDim) + "]");
      r.sequence = uint32_t(v);
    }
    const int64_t s = stage.at(i), k = topk_kind.at(i);
    if (s != 0 && s != 1) throw TraceError(where + ": stage code must be 0 (summarize) or 1 (generate)");
    if (k < 0 || k > 2) throw TraceError(where + ": topk_kind code must be 0, 1 or 2");
    r.stage = Stage(s);
    r.topk_kind = TopkKind(k);
    r.step = uint32_t(count(0));
    r.layer = uint32_t(count(1));
    r.head = uint32_t(count(2));
    r.d_head = uint32_t(count(3));
    r.query_rows = count(4);
    r.kv_len = count(5);
    r.keys_fetched = count(6);
    r.values_fetched = count(7);
    r.k_msb_bits = bits(8);
    r.k_lsb_bits = bits(9);
    r.q_bits = bits(10);
    r.v_bits = bits(11);
    r.lsb_refetch_rows = count(12);
    r.topk_k = iv[13].at(i);
    r.threshold = threshold.at(i);
    r.head_kept = bv[0].at(i) != 0;
    r.accumulate_importance = bv[1].at(i) != 0;
    r.rescale_importance = bv[2].at(i) != 0;
    validate_row(r, where);
  }
  return t;
}

struct PresetChoice {
  std::string name, file, overrides;
  std::vector<std::string> dirs;
};

HwConfig resolve_preset(const PresetChoice& p) {
  std::vector<std::string> all = p.dirs;
  for (const auto& d : default_preset_dirs()) all.push_back(d);
  return p.file.empty() ? load_preset(p.name, all, p.overrides) : load_preset_file(p.file, all, p.overrides);
}

std::string run(const Trace& trace, const PresetChoice& preset, bool dense_baseline) {
  const HwConfig cfg = resolve_preset(preset);
  Report rep;
  {
    py::gil_scoped_release release;
    rep = simulate(trace, cfg, dense_baseline);
  }
  return rep.to_json();
}

}  // namespace

PYBIND11_MODULE(_hwsim, m) {
  m.doc() = "SpAtten accelerator simulator (event-driven, torch-free). Use spatten.hwsim, not this module.";
  auto base = py::handle(PyExc_ValueError);
  static py::exception<TraceError> trace_error(m, "TraceError", base);
  static py::exception<ConfigError> config_error(m, "ConfigError", base);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TraceError& e) {
      py::set_error(trace_error, e.what());
    } catch (const ConfigError& e) {
      py::set_error(config_error, e.what());
    }
  });

  m.def("simulate_columns",
        [](const py::dict& columns, size_t rows, const std::string& meta_json, const std::string& preset,
           const std::string& preset_file, const std::vector<std::string>& dirs, const std::string& overrides,
           bool dense_baseline) {
          Trace t = trace_from_columns(columns, rows, meta_json);
          validate_trace(t);
          return run(t, PresetChoice{preset, preset_file, overrides, dirs}, dense_baseline);
        },
        py::arg("columns"), py::arg("rows"), py::arg("meta_json"), py::arg("preset"), py::arg("preset_file"),
        py::arg("preset_dirs"), py::arg("overrides"), py::arg("dense_baseline"),
        "Simulate a trace given as numpy columns; returns the report as JSON text.");
  m.def("simulate_file",
        [](const std::string& path, const std::string& preset, const std::string& preset_file,
           const std::vector<std::string>& dirs, const std::string& overrides, bool dense_baseline) {
          return run(read_trace_file(path), PresetChoice{preset, preset_file, overrides, dirs}, dense_baseline);
        },
        py::arg("path"), py::arg("preset"), py::arg("preset_file"), py::arg("preset_dirs"), py::arg("overrides"),
        py::arg("dense_baseline"), "Simulate a trace file (native or official CSV); returns the report as JSON text.");
  m.def("list_presets",
        [](const std::vector<std::string>& dirs) {
          std::vector<std::string> all = dirs;
          for (const auto& d : default_preset_dirs()) all.push_back(d);
          return list_presets(all);
        },
        py::arg("preset_dirs"));
  m.def("components", []() {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& c : builtin_components().components()) out.emplace_back(c.name, c.description);
    return out;
  });
  m.def("topk_cycles",
        [](std::vector<uint32_t> values, uint64_t k, uint32_t parallelism) {
          if (parallelism == 0) throw ConfigError("parallelism must be positive");
          const auto r = quickselect_cycles(values, k, parallelism);
          return py::make_tuple(r.cycles, r.passes);
        },
        py::arg("values"), py::arg("k"), py::arg("parallelism"),
        "Quick-select cycles and passes of the top-k engine on given values (hashed pivot).");
}
