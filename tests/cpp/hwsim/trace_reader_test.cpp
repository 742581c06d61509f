// Trace input: both formats parse; malformed input is a TraceError naming the line and field, never a crash.
#include <gtest/gtest.h>

#include <string>

#include "errors.h"
#include "trace.h"

using namespace spatten::hwsim;

namespace {
const std::string kHeader =
    "iteration_id,layer_id,head_id,embedding_length_D,sentence_length_L,key_fetch_num,quant_key_bit,"
    "quant_query_bit,auto_requant_thres,if_requant,auto_requant_incre,value_fetch_num,quant_value_bit,"
    "if_accumulate_importance,if_rescale_previous_importance,if_topk,topk\n";
const std::string kRow = "1,0,11,64.0,994,921,6,16,0.05,True,4,184,6,True,False,True,716\n";

std::string error_of(const std::string& text) {
  try {
    parse_trace_text(text, "t.csv");
  } catch (const TraceError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(TraceReader, OfficialCsvMapsOntoTraceColumns) {
  const Trace t = parse_trace_text(kHeader + kRow + "configs/x.yml,,,,,,,,,,,,,,,,\n", "t.csv");
  ASSERT_EQ(t.rows.size(), 1u);
  const TraceRow& r = t.rows[0];
  EXPECT_EQ(r.stage, Stage::kGenerate);
  EXPECT_EQ(r.step, 1u);
  EXPECT_EQ(r.head, 11u);
  EXPECT_EQ(r.d_head, 64u);
  EXPECT_EQ(r.kv_len, 994u);
  EXPECT_EQ(r.keys_fetched, 921u);
  EXPECT_EQ(r.values_fetched, 184u);
  EXPECT_EQ(r.k_msb_bits, 6);
  EXPECT_EQ(r.k_lsb_bits, 4);
  EXPECT_EQ(r.lsb_refetch_rows, 1u);
  EXPECT_EQ(r.query_rows, 1u);
  EXPECT_TRUE(r.head_kept);
  EXPECT_EQ(r.topk_kind, TopkKind::kToken);
  EXPECT_EQ(r.topk_k, 716);
}

TEST(TraceReader, NativeFormat) {
  const std::string text =
      "# spatten-trace v1\n# meta {\"heads\": 4}\n"
      "stage,step,layer,head,head_kept,d_head,query_rows,kv_len,keys_fetched,values_fetched,k_msb_bits,"
      "k_lsb_bits,q_bits,v_bits,threshold,lsb_refetch_rows,accumulate_importance,rescale_importance,topk_kind,topk_k\n"
      "summarize,0,2,1,False,64,30,40,30,30,-1,-1,-1,-1,-1,0,True,False,head,3\n";
  const Trace t = parse_trace_text(text, "n.trace");
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.rows[0].stage, Stage::kSummarize);
  EXPECT_FALSE(t.rows[0].head_kept);
  EXPECT_EQ(t.rows[0].query_rows, 30u);
  EXPECT_EQ(t.rows[0].topk_kind, TopkKind::kHead);
  // dense: 4 heads (from meta), all kept, everything fetched at full precision
  const Trace d = make_dense(t);
  ASSERT_EQ(d.rows.size(), 4u);
  EXPECT_TRUE(d.rows[3].head_kept);
  EXPECT_EQ(d.rows[3].keys_fetched, 40u);
  EXPECT_EQ(d.rows[3].query_rows, 40u);
  EXPECT_EQ(d.rows[3].k_msb_bits, -1);
  EXPECT_EQ(d.rows[3].topk_kind, TopkKind::kNone);
}

TEST(TraceReader, MalformedInputNamesLineAndField) {
  EXPECT_NE(error_of(kHeader + "1,0,11,64.0,994\n").find("t.csv:2: expected 17 fields, got 5"), std::string::npos);
  EXPECT_NE(error_of(kHeader + kRow + "1,0,11,64.0,994,abc,6,16,0.05,True,4,184,6,True,False,True,716\n")
                .find("t.csv:3: column key_fetch_num: not a number"), std::string::npos);
  EXPECT_NE(error_of(kHeader + "1,0,11,64.0,994,921,6,16,0.05,Maybe,4,184,6,True,False,True,716\n")
                .find("t.csv:2: column if_requant"), std::string::npos);
  EXPECT_NE(error_of(kHeader + "1,0,11,64.0,99999999999,921,6,16,0.05,True,4,184,6,True,False,True,716\n")
                .find("sentence_length_L"), std::string::npos);
  EXPECT_NE(error_of(kHeader + "1,0,11,64.0,900,921,6,16,0.05,True,4,184,6,True,False,True,716\n")
                .find("keys_fetched (921) exceeds kv_len (900)"), std::string::npos);
  EXPECT_NE(error_of(kHeader + "1,0,11,64.5,994,921,6,16,0.05,True,4,184,6,True,False,True,716\n")
                .find("expected an integer"), std::string::npos);
  EXPECT_NE(error_of(kHeader + "1,0,11,64,994,921,6,16,nan,True,4,184,6,True,False,True,716\n")
                .find("not a number: 'nan'"), std::string::npos);
  EXPECT_NE(error_of("iteration_id,layer_id\n1,2\n").find("missing"), std::string::npos);
  EXPECT_NE(error_of(kHeader).find("no data rows"), std::string::npos);
  EXPECT_NE(error_of("").find("empty"), std::string::npos);
  EXPECT_NE(error_of("hello\n").find("neither"), std::string::npos);
  EXPECT_NE(error_of("# spatten-trace v9\n").find("version"), std::string::npos);
  EXPECT_NE(error_of(kHeader + "1,0,11,64,994,921,6,16,1e999,True,4,184,6,True,False,True,716\n").find("out of range"),
            std::string::npos);
}

TEST(TraceReader, AbsurdWorkIsRefused) {
  // Every size at its bound: billions of transactions would take hours; refuse with a clear message.
  std::string text = kHeader;
  for (int i = 0; i < 200; ++i) text += "1,0,0,4096,16777216,16777216,-1,-1,-1,False,-1,16777216,-1,True,False,False,0\n";
  EXPECT_NE(error_of(text).find("limit"), std::string::npos);
}

TEST(TraceReader, MissingFile) { EXPECT_THROW(read_trace_file("/nonexistent/trace.csv"), TraceError); }
