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


# ---- one grammar: the Python readers accept exactly what spatten-sim accepts -------------------------------
def _native_text(version: int = 2) -> str:
    trace = Trace.from_records([_row(head=h, sequence=0) for h in range(2)], {"heads": 2, "name": "tiny"})
    lines = ["# spatten-trace v2", '# meta {"heads": 2, "name": "tiny"}', ",".join(COLUMN_NAMES)]
    for rec in trace.rows.itertuples(index=False):
        lines.append(",".join(str(v) for v in rec))
    if version == 1:
        lines = [lines[0].replace("v2", "v1"), lines[1]] + [line.rsplit(",", 1)[0] for line in lines[2:]]
    return "\n".join(lines) + "\n"


def _official_text(workloads_dir) -> str:
    return (workloads_dir / "small.csv").read_text()


def _replace_field(text: str, line: int, column: int, value: str) -> str:
    lines = text.split("\n")
    fields = lines[line].split(",")
    fields[column] = value
    lines[line] = ",".join(fields)
    return "\n".join(lines)


# (name, builder(native v2 text, official text) -> file bytes, accepted?)
KV = COLUMN_NAMES.index("kv_len")
THR = COLUMN_NAMES.index("threshold")
CORPUS = [
    ("native v2", lambda n, o: n, True),
    ("native v1", lambda n, o: _native_text(1), True),
    ("CRLF line ends", lambda n, o: n.replace("\n", "\r\n"), True),
    ("blank and tab-only lines", lambda n, o: n + "\n\t\n", True),
    ("spaces around a number", lambda n, o: _replace_field(n, 3, KV, " 10 "), True),
    ("exponent integer", lambda n, o: _replace_field(n, 3, KV, "1.0e1"), True),
    ("official csv", lambda n, o: o, True),
    ("official csv, 64.0 written as 6.4e1", lambda n, o: _replace_field(o, 1, 3, "6.4e1"), True),
    ("full-width digits", lambda n, o: _replace_field(n, 3, KV, "\uff11\uff10"), False),
    ("no-break space before a number", lambda n, o: _replace_field(n, 3, KV, "\u00a010"), False),
    ("digit separator", lambda n, o: _replace_field(n, 3, KV, "1_0"), False),
    ("hex number", lambda n, o: _replace_field(n, 3, KV, "0xa"), False),
    ("quoted number", lambda n, o: _replace_field(n, 3, KV, '"10"'), False),
    ("inf threshold", lambda n, o: _replace_field(n, 3, THR, "inf"), False),
    ("nan threshold", lambda n, o: _replace_field(n, 3, THR, "nan"), False),
    ("overflowing threshold", lambda n, o: _replace_field(n, 3, THR, "1e999"), False),
    ("underflowing threshold", lambda n, o: _replace_field(n, 3, THR, "1e-400"), False),
    ("absurd d_head", lambda n, o: _replace_field(n, 3, COLUMN_NAMES.index("d_head"), "5000"), False),
    ("official inf threshold", lambda n, o: _replace_field(o, 1, 8, "inf"), False),
    ("meta not JSON", lambda n, o: n.replace('{"heads": 2, "name": "tiny"}', "{heads: 2}"), False),
    ("meta with NaN", lambda n, o: n.replace('"heads": 2', '"heads": NaN'), False),
    ("meta is an array", lambda n, o: n.replace('{"heads": 2, "name": "tiny"}', "[2]"), False),
    ("v2 header reordered", lambda n, o: n.replace("stage,step", "step,stage", 1), False),
    ("v1 header with sequence", lambda n, o: n.replace("v2", "v1", 1), False),
    ("NUL byte", lambda n, o: n.replace("tiny", "ti\0ny"), False),
]


@pytest.mark.parametrize("name,build,accepted", CORPUS, ids=[c[0] for c in CORPUS])
def test_python_readers_and_the_simulator_share_one_grammar(workloads_dir, tmp_path, name, build, accepted,
                                                            spatten_sim):
    import subprocess

    path = tmp_path / "t.trace"
    path.write_bytes(build(_native_text(), _official_text(workloads_dir)).encode("utf-8"))
    try:
        Trace.load(path)
        python_ok = True
    except TraceFormatError:
        python_ok = False
    cli = subprocess.run([*spatten_sim, "--no-dense", "--json", "-", str(path)], capture_output=True, text=True)
    assert cli.returncode in (0, 2), cli.stderr
    assert (python_ok, cli.returncode == 0) == (accepted, accepted), cli.stderr


def test_invalid_utf8_is_refused_by_both(tmp_path, spatten_sim):
    import subprocess

    path = tmp_path / "t.trace"
    path.write_bytes(_native_text().encode().replace(b"tiny", b"ti\xffny"))
    with pytest.raises(TraceFormatError, match="UTF-8"):
        Trace.load(path)
    assert subprocess.run([*spatten_sim, "--no-dense", str(path)], capture_output=True).returncode == 2


def test_save_never_writes_a_file_the_simulator_refuses(tmp_path):
    good = Trace.from_records([_row()])
    bad = Trace(good.to_frame().assign(threshold=float("inf")), {})
    with pytest.raises(TraceFormatError, match="threshold"):
        bad.save(tmp_path / "bad.trace")
    assert not (tmp_path / "bad.trace").exists()
    with pytest.raises(TraceFormatError, match="meta"):
        Trace(good.to_frame(), {"x": float("nan")}).save(tmp_path / "nan.trace")
