// The simulator's view of a spatten trace (spatten/trace.py): one row per (sequence, stage, step, layer, head).
// Reads the native `# spatten-trace v2` file (v1: no `sequence` column, every row is sequence 0) and the
// official SpAtten workload CSV, with errors that name the file, the line and the field; builds from in-memory
// columns (the Python binding) with the same checks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spatten::hwsim {

enum class Stage : uint8_t { kSummarize = 0, kGenerate = 1 };
enum class TopkKind : uint8_t { kNone = 0, kToken = 1, kHead = 2 };

struct TraceRow {
  uint32_t sequence = 0;  // which sequence of a batch (trace v2); sequences are independent of each other
  Stage stage;
  uint32_t step, layer, head;
  bool head_kept;
  uint32_t d_head;
  uint64_t query_rows, kv_len, keys_fetched, values_fetched;
  int32_t k_msb_bits, k_lsb_bits, q_bits, v_bits;  // -1 = unquantized
  double threshold;
  uint64_t lsb_refetch_rows;
  bool accumulate_importance, rescale_importance;
  TopkKind topk_kind;
  int64_t topk_k;
};

struct Trace {
  std::vector<TraceRow> rows;
  std::string meta_json = "{}";  // native format: the `# meta` line, verbatim
  std::string source;            // file path, "columns" or "derived"
};

// Bounds shared with spatten/trace.py (_MAX_DIM): larger sizes are certainly a corrupt file, not a model.
constexpr uint64_t kMaxDim = uint64_t(1) << 24;
// Work bound of one run: more 32-byte transactions than this would take hours to simulate.
constexpr double kMaxTransactions = 4e9;

// Range checks; throws TraceError prefixed with `where` (e.g. "file.csv:12").
void validate_row(const TraceRow& row, const std::string& where);
// Whole-trace checks (non-empty, total work bounded).
void validate_trace(const Trace& trace);

// Reads either format (sniffed from the first line). Throws TraceError.
Trace read_trace_file(const std::string& path);
Trace parse_trace_text(const std::string& text, const std::string& source);

// End (exclusive) of the run of rows starting at `begin` that share its (sequence, stage, step, layer): one
// layer's work for one sequence.
size_t layer_group_end(const std::vector<TraceRow>& rows, size_t begin);

// Attention heads of the model: meta "heads" if present, else the largest head id + 1.
uint32_t trace_heads(const Trace& trace);
// Query heads that share one K/V head (GQA): meta heads / kv_heads when both are present and divide, else 1.
uint32_t query_heads_per_kv_head(const Trace& trace);

// The same trace run unpruned: every (sequence, stage, step, layer) group gets all heads, keys = values =
// kv_len (summarize: query_rows = kv_len too), all bits -1, no refetch, no importance, no top-k.
Trace make_dense(const Trace& trace, uint32_t heads_hint = 0);
// The same pruning without quantization: all bits -1 (full datapath), no LSB refetch.
Trace strip_quantization(const Trace& trace);

const char* stage_name(Stage s);

}  // namespace spatten::hwsim
