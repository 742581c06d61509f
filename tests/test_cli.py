"""The command line: eval glue|lm write their files, bad input is a clear error (exit 2), sweep and plot work."""

import json

import pytest
import yaml

from spatten.cli import main


def test_eval_lm_writes_result_trace_and_hardware(tmp_path, data_dir, capsys):
    out = tmp_path / "lm"
    code = main(["eval", "lm", "--data", "stories", "--max-tokens", "16", "--window", "16", "--stride", "8",
                 "--set", "token_keep=0.5", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["token_keep"] == 0.5 and result["kind"] == "lm"
    assert {"perplexity", "perplexity_dense", "kl_vs_dense", "agreement_vs_dense"} <= set(result["metrics"])
    assert (out / "trace.csv").read_text().startswith("# spatten-trace v2")
    assert yaml.safe_load((out / "config.yaml").read_text())["token_keep"] == 0.5
    hw = result["hardware"]
    assert hw is not None, "spatten.hwsim did not produce a hardware report"
    assert json.loads((out / "hardware.json").read_text())
    assert hw["cycles"] > 0 and hw["dram_bytes"] > 0 and hw["energy_joules"] > 0 and hw["speedup_vs_dense"] > 0
    assert "perplexity" in capsys.readouterr().out


def test_eval_glue_with_config_file(tmp_path, data_dir):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("token_keep: 0.5\nhead_keep: 0.75\n")
    out = tmp_path / "glue"
    assert main(["eval", "glue", "--task", "sts-b", "--n-examples", "12", "--config", str(cfg), "--out", str(out),
                 "--no-simulate"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["head_keep"] == 0.75 and result["n_examples"] == 12 and result["subset"]
    assert result["hardware"] is None and not (out / "hardware.json").exists()
    assert -1 <= result["metrics"]["spearman"] <= 1
    assert result["kept"]["head_keep_measured"] < 1.0


@pytest.mark.parametrize("argv, message", [
    (["eval", "glue", "--task", "nope"], "unknown GLUE task 'nope'"),
    (["eval", "glue", "--task", "mnli"], "dev_matched.tsv"),
    (["eval", "glue", "--set", "token_keep=2"], "token_keep must be a number in (0, 1]"),
    (["eval", "lm", "--data", "c4"], "unknown LM corpus 'c4'"),
    (["eval", "lm", "--model", "/no/such/model"], "neither a known name"),
    (["eval", "lm", "--model", "minilm", "--no-simulate"], "needs a decoder model"),
    (["sweep", "/no/such/sweep.yaml"], "sweep file"),
])
def test_bad_input_is_a_clear_error(argv, message, capsys, data_dir):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_sweep_and_plot_commands(tmp_path, data_dir):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({"tasks": ["stories"], "grid": {"token_keep": [1.0, 0.5]},
                                          "options": {"lm": {"max_tokens": 16, "window": 16, "stride": 8}}}))
    out = tmp_path / "runs"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.csv").is_file()
    assert main(["plot", str(out)]) == 0
    for name in ("metric_vs_keep", "kept_per_layer", "pareto"):
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.pdf").is_file()


def test_demo_quick_produces_table_and_plots(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("SPATTEN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for task in ("sts-b", "sst-2", "stories", "wikitext-2"):
        assert task in printed
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + 4 * 4  # header, rule, 4 tasks x 4 keep ratios
    assert "n/a" not in table  # every run has its metric and its hardware numbers
    for name in ("metric_vs_keep", "pareto", "kept_per_layer", "sentence_tokens"):
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.pdf").is_file()
