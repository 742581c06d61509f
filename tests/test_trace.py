import pytest

from spatten.trace import COLUMN_NAMES, Trace, TraceFormatError

OFFICIAL = [
    "small.csv",
    "summary-gpt2-medium-ptb-per0.csv",
    "summary-gpt2-medium-wikitext2-per0-hp-step5+dedic+glob_p+local_p+hp+topk+quant.csv",
    "summary-gpt2-small-wikitext2-per8-step1+dedic.csv",
    "summary-gpt2-small-wikitext2-per8.csv",
]


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_csv_round_trips_byte_for_byte(workloads_dir, tmp_path, name):
    source = workloads_dir / name
    trace = Trace.from_official_csv(source)
    out = trace.to_official_csv(tmp_path / name)
    assert out.read_bytes() == source.read_bytes()
    assert Trace.load(trace.save(tmp_path / "t.trace")) == trace


def test_official_fetch_counts_match_file(workloads_dir):
    # The small pruned GPT-2 trace: first row keeps all 993 keys but fetches 204 values, K 6+4 bits, tau 0.05.
    trace = Trace.from_official_csv(workloads_dir / "summary-gpt2-small-wikitext2-per8.csv")
    first = trace.rows.iloc[0]
    assert (first.kv_len, first.keys_fetched, first.values_fetched) == (993, 993, 204)
    assert (first.k_msb_bits, first.k_lsb_bits, first.threshold, first.lsb_refetch_rows) == (6, 4, 0.05, 1)
    assert len(trace) == 4608 and trace.rows["step"].max() == 31


def _row(**overrides):
    row = dict(stage="generate", step=0, layer=0, head=0, head_kept=True, d_head=64, query_rows=1, kv_len=10,
               keys_fetched=8, values_fetched=4, k_msb_bits=-1, k_lsb_bits=-1, q_bits=-1, v_bits=-1,
               threshold=-1.0, lsb_refetch_rows=0, accumulate_importance=True, rescale_importance=False,
               topk_kind="none", topk_k=-1)
    row.update(overrides)
    return row


def test_from_records_rejects_impossible_rows():
    assert len(Trace.from_records([_row()])) == 1
    with pytest.raises(TraceFormatError, match="keys_fetched"):
        Trace.from_records([_row(keys_fetched=11)])
    with pytest.raises(TraceFormatError, match="stage"):
        Trace.from_records([_row(stage="prefill")])


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda lines: lines[:1] + [lines[1].rsplit(",", 3)[0]], "expected 17 fields"),
        (lambda lines: [lines[0].replace("key_fetch_num", "keys")] + lines[1:], "missing"),
        (lambda lines: lines[:1] + [lines[1].replace(",993,993,", ",993,abc,", 1)], "key_fetch"),
        (lambda lines: lines[:1] + [lines[1].replace(",993,993,", ",993,99999999999,", 1)], "outside"),
    ],
)
def test_malformed_official_csv_names_the_line(workloads_dir, tmp_path, mutate, message):
    lines = (workloads_dir / "small.csv").read_text().splitlines()[:2]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(mutate(lines)) + "\n")
    with pytest.raises(TraceFormatError, match=message):
        Trace.from_official_csv(bad)


def test_native_format_rejects_other_versions(tmp_path):
    path = Trace.from_records([_row()]).save(tmp_path / "t.trace")
    path.write_text(path.read_text().replace("v2", "v9", 1))
    with pytest.raises(TraceFormatError, match="version"):
        Trace.load(path)
    assert len(COLUMN_NAMES) == 21 and COLUMN_NAMES[-1] == "sequence"


def test_v1_files_still_read_as_one_sequence(tmp_path):
    batch = Trace.from_records([_row(sequence=s, head=h) for s in range(2) for h in range(2)])
    path = batch.save(tmp_path / "t.trace")
    assert path.read_text().startswith("# spatten-trace v2\n")
    assert Trace.load(path) == batch
    # The same rows written by a v1 writer: no sequence column; every row reads as sequence 0.
    lines = path.read_text().splitlines()
    v1 = [lines[0].replace("v2", "v1"), lines[1]] + [line.rsplit(",", 1)[0] for line in lines[2:]]
    (tmp_path / "v1.trace").write_text("\n".join(v1) + "\n")
    old = Trace.load(tmp_path / "v1.trace")
    assert old.rows["sequence"].tolist() == [0, 0, 0, 0]
    assert old.rows.drop(columns="sequence").equals(batch.rows.drop(columns="sequence"))
    # A v1 header that carries the v2 column (or the reverse) is refused.
    (tmp_path / "mixed.trace").write_text("\n".join([lines[0].replace("v2", "v1")] + lines[1:]) + "\n")
    with pytest.raises(TraceFormatError, match="header"):
        Trace.load(tmp_path / "mixed.trace")


def test_a_batch_cannot_be_written_as_an_official_csv(tmp_path):
    batch = Trace.from_records([_row(sequence=s) for s in range(2)])
    with pytest.raises(TraceFormatError, match="batch"):
        batch.to_official_csv(tmp_path / "b.csv")
