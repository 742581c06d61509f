"""The command line: eval glue|lm write their files, bad input is one line and exit 2 before any model loads,
sweep and plot work, plot only reads its input."""

import json
import os

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
    printed = capsys.readouterr()
    assert "perplexity" in printed.out and "wall time on this machine" in printed.out
    assert "stories windows" in printed.err  # the progress bar


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


class ModelLoaded(BaseException):
    """Raised by the patched loader: a bad input got as far as loading a model."""


def cli(argv) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's usage errors
        return stop.code


def bad_sweep(tmp_path, **change) -> str:
    spec = {"tasks": ["stories"], "grid": {"token_keep": [1.0, 0.5]}, "simulate": False,
            "options": {"lm": {"max_tokens": 16, "window": 16, "stride": 8}}, **change}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


BAD_INPUTS = [  # (argv, or a function of tmp_path giving it; a piece of the one line that names the problem)
    (["eval", "glue", "--task", "nope"], "argument --task: invalid choice: 'nope'"),
    (["eval", "glue", "--task", "mnli"], "dev_matched.tsv"),
    (["eval", "glue", "--set", "token_keep=2"], "token_keep must be a number in (0, 1]"),
    (["eval", "glue", "--set", "token_kep=0.5"], "unknown SpAttenConfig field(s): token_kep"),
    (["eval", "lm", "--set", "k_bits=[6,4"], "--set k_bits=[6,4: the value is not valid YAML"),
    (["eval", "lm", "--set", "token_keep"], "--set expects field=value"),
    (["eval", "lm", "--data", "c4"], "argument --data: invalid choice: 'c4'"),
    (["eval", "lm", "--model", "/no/such/model"], "neither a known name"),
    (["eval", "lm", "--model", "minilm", "--no-simulate"], "needs a decoder model"),
    (["eval", "lm", "--max-tokens", "-10"], "argument --max-tokens: must be at least 2, got -10"),
    (["eval", "lm", "--max-tokens", "ten"], "argument --max-tokens: expected an integer, got 'ten'"),
    (["eval", "lm", "--stride", "300"], "stride must be smaller than window (256), got 300"),
    (["eval", "glue", "--max-length", "-3"], "argument --max-length: must be at least 2, got -3"),
    (["eval", "glue", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["eval", "glue", "--preset", "nope"], "unknown simulator preset 'nope'"),
    (["eval", "lm", "--preset", "nope"], "unknown simulator preset 'nope'"),
    (lambda tmp: ["eval", "lm", "--out", str(tmp / "a-file" / "out")], "is not writable (Not a directory)"),
    (["sweep", "/no/such/sweep.yaml"], "sweep file"),
    (lambda tmp: ["sweep", bad_sweep(tmp, options={"lm": {"n_exampels": 3}})], "unknown lm option(s) ['n_exampels']"),
    (lambda tmp: ["sweep", bad_sweep(tmp, preset="nope", simulate=True)], "unknown simulator preset 'nope'"),
    (lambda tmp: ["sweep", bad_sweep(tmp, grid={"token_keep": [1.5]})], "token_keep must be a number in (0, 1]"),
    (lambda tmp: ["sweep", bad_sweep(tmp, grid={"token_keep": [1.0, 1]})], "are the same configuration"),
    (lambda tmp: ["sweep", bad_sweep(tmp, tasks=["sts-b", "STS-B"])], "are the same task"),
    (lambda tmp: ["sweep", bad_sweep(tmp, grid=[])], "`grid` must map at least one"),
    (lambda tmp: ["sweep", bad_sweep(tmp, options={"lm": {"max_tokens": -10}})], "max_tokens must be an integer >= 2"),
    (lambda tmp: ["sweep", str(tmp / "a-file")], "a-file is not valid YAML"),
    (lambda tmp: ["sweep", bad_sweep(tmp), "--out", str(tmp / "a-file" / "out")], "is not writable"),
    (lambda tmp: ["sweep", bad_sweep(tmp), "--workers", "0"], "argument --workers: must be at least 1, got 0"),
    (lambda tmp: ["sweep", bad_sweep(tmp), "--address", "auto"], "--address needs --engine ray"),
    (lambda tmp: ["sweep", bad_sweep(tmp), "--engine", "spark"], "argument --engine: invalid choice: 'spark'"),
    (lambda tmp: ["plot", str(tmp / "nowhere")], "results directory"),
    (lambda tmp: ["plot", str(tmp)], "no finished run"),
    (["train-gpt2", "--out", "x", "--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["train-head", "--task", "sts-b"], "argument --task: invalid choice: 'sts-b'"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_before_any_model_loads(argv, message, tmp_path, capsys, data_dir,
                                                            monkeypatch):
    import spatten.models

    def load_model(*args, **kwargs):
        raise ModelLoaded(args)

    monkeypatch.setattr(spatten.models, "load_model", load_model)
    (tmp_path / "a-file").write_text("tasks: [sts-b\n")  # also malformed YAML
    argv = argv(tmp_path) if callable(argv) else argv
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_full_disk_is_one_line(tmp_path, capsys, data_dir, monkeypatch):
    import errno

    import spatten.atomic

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spatten.atomic.os, "fsync", full)
    assert cli(["sweep", bad_sweep(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is not writable (No space left on device)" in err and len(err.strip().splitlines()) == 1


def test_version_and_help_text_on_every_option(capsys):
    import spatten
    from spatten.cli import build_parser

    assert cli(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"spatten {spatten.__version__}"
    parser = build_parser()
    pending = [parser]
    while pending:
        p = pending.pop()
        for action in p._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):  # subcommands
                pending.extend(action.choices.values())
            elif action.dest not in ("help", "version", "command", "what"):
                assert action.help, f"{p.prog} {action.option_strings or action.dest} has no help text"
    help_text = build_parser()._subparsers._group_actions[0].choices["sweep"].format_help()
    assert "(default: local)" in help_text and "--keep-going" in help_text


def test_sweep_and_plot_commands(tmp_path, data_dir):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({"tasks": ["stories"], "grid": {"token_keep": [1.0, 0.5]},
                                          "options": {"lm": {"max_tokens": 16, "window": 16, "stride": 8}}}))
    out = tmp_path / "runs"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.csv").is_file()
    (out / "results.csv").unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    plots = tmp_path / "plots"
    assert main(["plot", str(out), "--out", str(plots)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # the input is only read
    for name in ("metric_vs_keep", "kept_per_layer", "pareto"):
        assert (plots / f"{name}.png").stat().st_size > 1000 and (plots / f"{name}.pdf").is_file()


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


def test_a_second_sweep_on_a_busy_directory_exits_2(tmp_path, capsys, data_dir):
    from spatten.eval.sweep import sweep_lock

    out = tmp_path / "out"
    out.mkdir()
    with sweep_lock(out):
        assert cli(["sweep", bad_sweep(tmp_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "another sweep" in err and f"is running in {out}" in err and len(err.strip().splitlines()) == 1
