#include "trace.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>

#include "errors.h"

namespace spatten::hwsim {

namespace {

const std::vector<std::string> kNativeColumns = {
    "stage", "step", "layer", "head", "head_kept", "d_head", "query_rows", "kv_len", "keys_fetched",
    "values_fetched", "k_msb_bits", "k_lsb_bits", "q_bits", "v_bits", "threshold", "lsb_refetch_rows",
    "accumulate_importance", "rescale_importance", "topk_kind", "topk_k"};

// Official column -> native column (spatten/trace.py OFFICIAL_COLUMNS).
const std::vector<std::pair<std::string, std::string>> kOfficialColumns = {
    {"iteration_id", "step"},
    {"layer_id", "layer"},
    {"head_id", "head"},
    {"embedding_length_D", "d_head"},
    {"sentence_length_L", "kv_len"},
    {"key_fetch_num", "keys_fetched"},
    {"quant_key_bit", "k_msb_bits"},
    {"quant_query_bit", "q_bits"},
    {"auto_requant_thres", "threshold"},
    {"if_requant", "lsb_refetch_rows"},
    {"auto_requant_incre", "k_lsb_bits"},
    {"value_fetch_num", "values_fetched"},
    {"quant_value_bit", "v_bits"},
    {"if_accumulate_importance", "accumulate_importance"},
    {"if_rescale_previous_importance", "rescale_importance"},
    {"if_topk", "topk_kind"},
    {"topk", "topk_k"}};

std::vector<std::string> split_csv(const std::string& line) {
  // The trace formats never quote fields; a quote is reported as a bad value by the field parser.
  std::vector<std::string> out;
  std::string cur;
  for (char c : line) {
    if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else if (c != '\r') {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t')) ++a;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) --b;
  return s.substr(a, b - a);
}

[[noreturn]] void fail(const std::string& where, const std::string& column, const std::string& why) {
  throw TraceError(where + ": column " + column + ": " + why);
}

// The number grammar both readers share (spatten/trace.py _NUMBER): optional sign, ASCII digits with an
// optional decimal point, optional exponent. No hex, no inf/nan, no digit separators.
bool decimal_syntax(const std::string& t) {
  size_t i = 0, digits = 0;
  auto digit = [&](size_t k) { return k < t.size() && t[k] >= '0' && t[k] <= '9'; };
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
  while (digit(i)) ++i, ++digits;
  if (i < t.size() && t[i] == '.') {
    ++i;
    while (digit(i)) ++i, ++digits;
  }
  if (!digits) return false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  return i == t.size();
}

double parse_number(const std::string& text, const std::string& where, const std::string& column) {
  const std::string t = trim(text);
  if (t.empty()) fail(where, column, "empty value");
  if (!decimal_syntax(t)) fail(where, column, "not a number: '" + t + "'");
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(t.c_str(), &end);
  if (end != t.c_str() + t.size()) fail(where, column, "not a number: '" + t + "'");
  if (errno == ERANGE || std::isinf(v)) fail(where, column, "number out of range: '" + t + "'");
  if (std::isnan(v)) fail(where, column, "NaN is not a valid value");
  return v;
}

int64_t parse_int(const std::string& text, const std::string& where, const std::string& column) {
  const double v = parse_number(text, where, column);  // official files write some integers as "64.0"
  if (v != std::floor(v)) fail(where, column, "expected an integer, got '" + trim(text) + "'");
  if (std::fabs(v) > 9e15) fail(where, column, "absurd value '" + trim(text) + "'");
  return int64_t(v);
}

uint64_t parse_count(const std::string& text, const std::string& where, const std::string& column) {
  const int64_t v = parse_int(text, where, column);
  if (v < 0 || uint64_t(v) > kMaxDim)
    fail(where, column, std::to_string(v) + " is outside [0, " + std::to_string(kMaxDim) + "]");
  return uint64_t(v);
}

bool parse_bool(const std::string& text, const std::string& where, const std::string& column) {
  const std::string t = trim(text);
  if (t == "True" || t == "true" || t == "1") return true;
  if (t == "False" || t == "false" || t == "0") return false;
  fail(where, column, "expected True or False, got '" + t + "'");
}

int32_t parse_bits(const std::string& text, const std::string& where, const std::string& column) {
  const int64_t v = parse_int(text, where, column);
  if (v != -1 && (v < 0 || v > 32)) fail(where, column, std::to_string(v) + " must be -1 (unquantized) or in [0, 32]");
  return int32_t(v);
}

// Fills a row from name -> text; shared by both formats.
// `shown` maps native column names to the names the file uses (the official CSV's), for error messages.
TraceRow row_from_fields(const std::map<std::string, std::string>& f, const std::string& where,
                         const std::map<std::string, std::string>* shown = nullptr) {
  auto col = [&](const char* name) -> std::string {
    if (shown) {
      const auto it = shown->find(name);
      if (it != shown->end()) return it->second;
    }
    return name;
  };
  TraceRow r{};
  const auto seq = f.find("sequence");
  r.sequence = seq == f.end() ? 0 : uint32_t(parse_count(seq->second, where, col("sequence")));
  const std::string stage = trim(f.at("stage"));
  if (stage == "summarize") r.stage = Stage::kSummarize;
  else if (stage == "generate") r.stage = Stage::kGenerate;
  else fail(where, col("stage"), "must be summarize or generate, got '" + stage + "'");
  r.step = uint32_t(parse_count(f.at("step"), where, col("step")));
  r.layer = uint32_t(parse_count(f.at("layer"), where, col("layer")));
  r.head = uint32_t(parse_count(f.at("head"), where, col("head")));
  r.head_kept = parse_bool(f.at("head_kept"), where, col("head_kept"));
  r.d_head = uint32_t(parse_count(f.at("d_head"), where, col("d_head")));
  r.query_rows = parse_count(f.at("query_rows"), where, col("query_rows"));
  r.kv_len = parse_count(f.at("kv_len"), where, col("kv_len"));
  r.keys_fetched = parse_count(f.at("keys_fetched"), where, col("keys_fetched"));
  r.values_fetched = parse_count(f.at("values_fetched"), where, col("values_fetched"));
  r.k_msb_bits = parse_bits(f.at("k_msb_bits"), where, col("k_msb_bits"));
  r.k_lsb_bits = parse_bits(f.at("k_lsb_bits"), where, col("k_lsb_bits"));
  r.q_bits = parse_bits(f.at("q_bits"), where, col("q_bits"));
  r.v_bits = parse_bits(f.at("v_bits"), where, col("v_bits"));
  r.threshold = parse_number(f.at("threshold"), where, col("threshold"));
  r.lsb_refetch_rows = parse_count(f.at("lsb_refetch_rows"), where, col("lsb_refetch_rows"));
  r.accumulate_importance = parse_bool(f.at("accumulate_importance"), where, col("accumulate_importance"));
  r.rescale_importance = parse_bool(f.at("rescale_importance"), where, col("rescale_importance"));
  const std::string kind = trim(f.at("topk_kind"));
  if (kind == "none") r.topk_kind = TopkKind::kNone;
  else if (kind == "token") r.topk_kind = TopkKind::kToken;
  else if (kind == "head") r.topk_kind = TopkKind::kHead;
  else fail(where, col("topk_kind"), "must be none, token or head, got '" + kind + "'");
  r.topk_k = parse_int(f.at("topk_k"), where, col("topk_k"));
  validate_row(r, where);
  return r;
}

std::vector<std::string> split_lines(const std::string& text) {
  // Lines end at '\n'; every '\r' is dropped (CRLF files read like LF files).
  std::vector<std::string> lines;
  std::string cur;
  for (char c : text) {
    if (c == '\n') {
      lines.push_back(cur);
      cur.clear();
    } else if (c != '\r') {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) lines.push_back(cur);
  return lines;
}

bool blank(const std::string& line) { return trim(line).empty() || trim(line) == "\r"; }

bool valid_utf8(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : 99;
    if (n == 99 || c == 0xC0 || c == 0xC1 || c > 0xF4 || i + n >= text.size() + (n ? 0 : 1)) return false;
    for (size_t k = 1; k <= n; ++k)
      if ((static_cast<unsigned char>(text[i + k]) >> 6) != 0x2) return false;
    if (n) {  // no overlong forms, no surrogates, nothing above U+10FFFF (as Python's decoder)
      const unsigned char d = static_cast<unsigned char>(text[i + 1]);
      if ((c == 0xE0 && d < 0xA0) || (c == 0xED && d >= 0xA0) || (c == 0xF0 && d < 0x90) || (c == 0xF4 && d >= 0x90))
        return false;
    }
    i += n + 1;
  }
  return true;
}

// A strict JSON validator (RFC 8259: no NaN/Infinity, no trailing commas) for the `# meta` line, so the
// simulator refuses exactly the metadata Python's json.loads refuses.
class JsonCheck {
 public:
  explicit JsonCheck(const std::string& s) : s_(s) {}
  bool object_document() {
    ws();
    if (peek() != '{' || !value()) return false;
    ws();
    return i_ == s_.size();
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool literal(const char* word) {
    const std::string w(word);
    if (s_.compare(i_, w.size(), w) != 0) return false;
    i_ += w.size();
    return true;
  }
  bool string() {
    if (peek() != '"') return false;
    for (++i_; i_ < s_.size(); ++i_) {
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') return ++i_, true;
      if (c < 0x20) return false;
      if (c == '\\') {
        ++i_;
        if (i_ >= s_.size()) return false;
        if (s_[i_] == 'u') {
          for (int k = 0; k < 4; ++k)
            if (++i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_]))) return false;
        } else if (std::string("\"\\/bfnrt").find(s_[i_]) == std::string::npos) {
          return false;
        }
      }
    }
    return false;
  }
  bool number() {
    const size_t start = i_;
    if (peek() == '-') ++i_;
    if (peek() == '0') ++i_;
    else if (peek() >= '1' && peek() <= '9') while (std::isdigit(static_cast<unsigned char>(peek()))) ++i_;
    else return false;
    if (peek() == '.') {
      ++i_;
      if (!std::isdigit(static_cast<unsigned char>(peek()))) return false;
      while (std::isdigit(static_cast<unsigned char>(peek()))) ++i_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      if (!std::isdigit(static_cast<unsigned char>(peek()))) return false;
      while (std::isdigit(static_cast<unsigned char>(peek()))) ++i_;
    }
    return i_ > start;
  }
  bool value() {
    if (++depth_ > 200) return false;
    ws();
    bool ok = false;
    const char c = peek();
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++i_;
      ws();
      if (peek() == close) {
        ++i_;
        ok = true;
      } else {
        while (true) {
          if (c == '{') {
            ws();
            if (!string()) break;
            ws();
            if (peek() != ':') break;
            ++i_;
          }
          if (!value()) break;
          ws();
          if (peek() == ',') {
            ++i_;
            continue;
          }
          if (peek() == close) {
            ++i_;
            ok = true;
          }
          break;
        }
      }
    } else if (c == '"') {
      ok = string();
    } else if (c == 't' || c == 'f' || c == 'n') {
      ok = literal("true") || literal("false") || literal("null");
    } else {
      ok = number();
    }
    --depth_;
    return ok;
  }
  const std::string& s_;
  size_t i_ = 0;
  int depth_ = 0;
};

bool json_object(const std::string& text) { return JsonCheck(text).object_document(); }

Trace parse_official(const std::vector<std::string>& lines, const std::string& source) {
  Trace trace;
  trace.source = source;
  const auto header = split_csv(lines[0]);
  std::vector<std::string> expected;
  for (const auto& c : kOfficialColumns) expected.push_back(c.first);
  if (header != expected) {
    std::string missing;
    for (const auto& c : expected)
      if (std::find(header.begin(), header.end(), c) == header.end()) missing += (missing.empty() ? "" : ", ") + c;
    throw TraceError(source + ":1: header is not the official workload header" +
                     (missing.empty() ? std::string(" (columns out of order or extra)") : " (missing " + missing + ")"));
  }
  std::map<std::string, std::string> shown;
  for (const auto& c : kOfficialColumns) shown[c.second] = c.first;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string where = source + ":" + std::to_string(i + 1);
    if (blank(lines[i])) continue;
    const auto fields = split_csv(lines[i]);
    if (fields.size() != expected.size())
      throw TraceError(where + ": expected " + std::to_string(expected.size()) + " fields, got " +
                       std::to_string(fields.size()) + " (truncated row?)");
    // The last line carries the algorithm config path in iteration_id and nothing else.
    if (std::all_of(fields.begin() + 1, fields.end(), [](const std::string& s) { return trim(s).empty(); }) &&
        !trim(fields[0]).empty()) {
      continue;
    }
    std::map<std::string, std::string> f;
    for (size_t c = 0; c < expected.size(); ++c) f[kOfficialColumns[c].second] = fields[c];
    try {
      f["lsb_refetch_rows"] = parse_bool(f["lsb_refetch_rows"], where, "") ? "1" : "0";
    } catch (const TraceError&) {
      fail(where, "if_requant", "expected True or False, got '" + trim(f["lsb_refetch_rows"]) + "'");
    }
    try {
      f["topk_kind"] = parse_bool(f["topk_kind"], where, "") ? "token" : "none";
    } catch (const TraceError&) {
      fail(where, "if_topk", "expected True or False, got '" + trim(f["topk_kind"]) + "'");
    }
    f["stage"] = "generate";
    f["head_kept"] = "True";
    f["query_rows"] = "1";
    trace.rows.push_back(row_from_fields(f, where, &shown));
  }
  if (trace.rows.empty()) throw TraceError(source + ": no data rows");
  return trace;
}

Trace parse_native(const std::vector<std::string>& lines, const std::string& source) {
  const std::string magic = "# spatten-trace v";
  const std::string version = trim(lines[0].substr(magic.size()));
  if (version != "1" && version != "2")
    throw TraceError(source + ":1: trace format version '" + version + "'; this simulator reads 1 and 2");
  if (lines.size() < 3 || lines[1].rfind("# meta ", 0) != 0) throw TraceError(source + ":2: expected '# meta {...}'");
  Trace trace;
  trace.source = source;
  trace.meta_json = trim(lines[1].substr(7));
  if (!json_object(trace.meta_json)) throw TraceError(source + ":2: metadata is not a JSON object");
  const auto header = split_csv(lines[2]);
  // The header is exactly the version's columns, in order (spatten/trace.py COLUMN_NAMES / V1_COLUMN_NAMES).
  std::vector<std::string> expected = kNativeColumns;
  if (version == "2") expected.push_back("sequence");
  if (header != expected) {
    std::string want;
    for (const auto& c : expected) want += (want.empty() ? "" : ",") + c;
    throw TraceError(source + ":3: header differs from the v" + version + " columns " + want);
  }
  for (size_t i = 3; i < lines.size(); ++i) {
    const std::string where = source + ":" + std::to_string(i + 1);
    if (blank(lines[i])) continue;
    const auto fields = split_csv(lines[i]);
    if (fields.size() != header.size())
      throw TraceError(where + ": expected " + std::to_string(header.size()) + " fields, got " +
                       std::to_string(fields.size()) + " (truncated row?)");
    std::map<std::string, std::string> f;
    for (size_t c = 0; c < header.size(); ++c) f[header[c]] = fields[c];
    trace.rows.push_back(row_from_fields(f, where));
  }
  if (trace.rows.empty()) throw TraceError(source + ": no data rows");
  return trace;
}

}  // namespace

const char* stage_name(Stage s) { return s == Stage::kSummarize ? "summarize" : "generate"; }

void validate_row(const TraceRow& r, const std::string& where) {
  auto bad = [&](const std::string& msg) { throw TraceError(where + ": " + msg); };
  for (auto [name, v] : {std::pair<const char*, uint64_t>{"sequence", r.sequence}, {"step", r.step}, {"layer", r.layer}, {"head", r.head},
                         {"d_head", r.d_head}, {"query_rows", r.query_rows}, {"kv_len", r.kv_len},
                         {"keys_fetched", r.keys_fetched}, {"values_fetched", r.values_fetched},
                         {"lsb_refetch_rows", r.lsb_refetch_rows}})
    if (v > kMaxDim) bad(std::string(name) + " = " + std::to_string(v) + " is outside [0, " + std::to_string(kMaxDim) + "]");
  if (r.d_head == 0) bad("d_head must be positive");
  if (r.d_head > 4096) bad("d_head = " + std::to_string(r.d_head) + " is absurd (at most 4096)");
  if (r.keys_fetched > r.kv_len)
    bad("keys_fetched (" + std::to_string(r.keys_fetched) + ") exceeds kv_len (" + std::to_string(r.kv_len) + ")");
  if (r.values_fetched > r.kv_len)
    bad("values_fetched (" + std::to_string(r.values_fetched) + ") exceeds kv_len (" + std::to_string(r.kv_len) + ")");
  if (r.lsb_refetch_rows > r.query_rows)
    bad("lsb_refetch_rows (" + std::to_string(r.lsb_refetch_rows) + ") exceeds query_rows (" +
        std::to_string(r.query_rows) + ")");
  for (auto [name, v] : {std::pair<const char*, int32_t>{"k_msb_bits", r.k_msb_bits}, {"k_lsb_bits", r.k_lsb_bits},
                         {"q_bits", r.q_bits}, {"v_bits", r.v_bits}})
    if (v != -1 && (v < 0 || v > 32)) bad(std::string(name) + " = " + std::to_string(v) + " must be -1 or in [0, 32]");
  if (!std::isfinite(r.threshold)) bad("threshold must be a finite number");
  if (r.topk_kind != TopkKind::kNone && (r.topk_k < 0 || uint64_t(r.topk_k) > kMaxDim))
    bad("topk_k = " + std::to_string(r.topk_k) + " is outside [0, " + std::to_string(kMaxDim) + "]");
}

void validate_trace(const Trace& trace) {
  if (trace.rows.empty()) throw TraceError(trace.source + ": the trace has no rows");
  double tx = 0;
  for (const auto& r : trace.rows) {
    const double bytes_per_row = double(r.d_head) * 32 / 8;  // widest element
    tx += double(r.keys_fetched + r.values_fetched) * bytes_per_row / 32 * 2;
    if (r.stage == Stage::kSummarize) tx += double(r.query_rows) * bytes_per_row / 32;
  }
  if (tx > kMaxTransactions)
    throw TraceError(trace.source + ": the trace asks for about " + std::to_string(uint64_t(tx)) +
                     " DRAM transactions, more than the simulator's limit of " +
                     std::to_string(uint64_t(kMaxTransactions)) + " (absurd sizes?)");
}

Trace parse_trace_text(const std::string& text, const std::string& source) {
  const auto lines = split_lines(text);
  if (lines.empty() || blank(lines[0])) throw TraceError(source + ":1: empty file");
  if (text.find('\0') != std::string::npos) throw TraceError(source + ": not a text file (NUL byte)");
  if (!valid_utf8(text)) throw TraceError(source + ": not a text file (invalid UTF-8)");
  Trace trace;
  if (lines[0].rfind("iteration_id", 0) == 0) trace = parse_official(lines, source);
  else if (lines[0].rfind("# spatten-trace v", 0) == 0) trace = parse_native(lines, source);
  else throw TraceError(source + ":1: neither a spatten trace ('# spatten-trace v1') nor an official workload CSV");
  validate_trace(trace);
  return trace;
}

Trace read_trace_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TraceError("trace file not found or unreadable: " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_trace_text(ss.str(), path);
}

namespace {
uint32_t int_from_meta(const std::string& meta, const std::string& key) {
  // Tiny scan for "key": N in the meta JSON (no JSON library needed for one integer).
  const auto pos = meta.find("\"" + key + "\"");
  if (pos == std::string::npos) return 0;
  const auto colon = meta.find(':', pos);
  if (colon == std::string::npos) return 0;
  char* end = nullptr;
  const long v = std::strtol(meta.c_str() + colon + 1, &end, 10);
  return v > 0 && v < 65536 ? uint32_t(v) : 0;
}
}  // namespace

size_t layer_group_end(const std::vector<TraceRow>& rows, size_t begin) {
  const TraceRow& first = rows[begin];
  size_t end = begin;
  while (end < rows.size() && rows[end].sequence == first.sequence && rows[end].stage == first.stage &&
         rows[end].step == first.step && rows[end].layer == first.layer)
    ++end;
  return end;
}

uint32_t trace_heads(const Trace& trace) {
  uint32_t heads = int_from_meta(trace.meta_json, "heads");
  if (!heads)
    for (const auto& r : trace.rows) heads = std::max(heads, r.head + 1);
  return heads;
}

uint32_t query_heads_per_kv_head(const Trace& trace) {
  const uint32_t heads = int_from_meta(trace.meta_json, "heads");
  const uint32_t kv_heads = int_from_meta(trace.meta_json, "kv_heads");
  return heads && kv_heads && kv_heads < heads && heads % kv_heads == 0 ? heads / kv_heads : 1;
}

Trace make_dense(const Trace& trace, uint32_t heads_hint) {
  const uint32_t heads = heads_hint ? heads_hint : trace_heads(trace);
  Trace out;
  out.meta_json = trace.meta_json;
  out.source = trace.source + " (dense)";
  // One group per (stage, step, layer) in first-appearance order; its first row is the template.
  size_t i = 0;
  while (i < trace.rows.size()) {
    const TraceRow& t = trace.rows[i];
    const size_t j = layer_group_end(trace.rows, i);
    uint64_t kv_len = 0;
    for (size_t k = i; k < j; ++k) kv_len = std::max(kv_len, trace.rows[k].kv_len);
    for (uint32_t h = 0; h < heads; ++h) {
      TraceRow r = t;
      r.head = h;
      r.head_kept = true;
      r.kv_len = kv_len;
      r.keys_fetched = r.values_fetched = kv_len;
      if (r.stage == Stage::kSummarize) r.query_rows = kv_len;
      r.k_msb_bits = r.k_lsb_bits = r.q_bits = r.v_bits = -1;
      r.threshold = -1;
      r.lsb_refetch_rows = 0;
      r.accumulate_importance = r.rescale_importance = false;
      r.topk_kind = TopkKind::kNone;
      r.topk_k = -1;
      out.rows.push_back(r);
    }
    i = j;
  }
  return out;
}

Trace strip_quantization(const Trace& trace) {
  Trace out = trace;
  out.source = trace.source + " (unquantized)";
  for (auto& r : out.rows) {
    r.k_msb_bits = r.k_lsb_bits = r.q_bits = r.v_bits = -1;
    r.threshold = -1;
    r.lsb_refetch_rows = 0;
  }
  return out;
}

}  // namespace spatten::hwsim
