"""The main job (`spatten demo` / `make demo`): accuracy against pruning next to the simulated hardware gain,
for the embedded MiniLM (STS-B, SST-2 with a quickly fitted head) and the llama2.c stories260K decoder
(stories sampled from the unpruned model, WikiText-2), at token / KV keep ratios 1.0 -> 0.3.

It is a sweep like any other (spatten.eval.sweep), so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from spatten.atomic import atomic_write_text

KEEP_RATIOS = [1.0, 0.7, 0.5, 0.3]
DEMO_SENTENCE = "As a visual treat, the film is almost perfect."

# Sized to finish in a few minutes on two CPU cores; the table says which runs use a subset.
FULL = {"glue_examples": 400, "head_train": 4000, "lm_tokens": 256}
QUICK = {"glue_examples": 24, "head_train": 64, "lm_tokens": 48}


def demo_sweep(out: Path, quick: bool = False, simulate: bool = True) -> dict:
    size = QUICK if quick else FULL
    window = 128 if not quick else 32
    return {
        "out": str(out / "runs"),
        "preset": "spatten",
        "simulate": simulate,
        "tasks": ["sts-b", "sst-2", "stories", "wikitext-2"],
        "models": {"encoder": ["minilm"], "decoder": ["stories260K"]},
        "grid": {"token_keep": KEEP_RATIOS},
        "options": {"glue": {"n_examples": size["glue_examples"], "head_train": size["head_train"]},
                    "lm": {"max_tokens": size["lm_tokens"], "window": window, "stride": window // 2}},
    }


def demo_table(table: pd.DataFrame) -> pd.DataFrame:
    """The printed table: one row per run, hardware columns side by side with the metric."""
    rows = []
    for _, r in table.sort_values(["kind", "task", "config.token_keep"], ascending=[True, True, False]).iterrows():
        rows.append({
            "task": r["task"] + (f" (first {int(r['n_examples'])})" if r["kind"] == "glue" and r["subset"]
                                 else f" ({int(r['n_examples'])} tok)" if r["kind"] == "lm" else ""),
            "model": r["model"], "keep": r["config.token_keep"],
            "metric": r["metric"], "value": r["value"],
            "tokens kept": r["kept.token_keep_measured"],
            "speedup": r.get("hw.speedup_vs_dense"), "DRAM red.": r.get("hw.dram_reduction_vs_dense"),
            "energy red.": r.get("hw.energy_reduction_vs_dense"),
            "energy (uJ)": None if pd.isna(r.get("hw.energy_joules")) else r["hw.energy_joules"] * 1e6,
        })
    return pd.DataFrame(rows)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (pandas' to_markdown needs the optional `tabulate`)."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def run_demo(out: str | Path = "results/demo", *, quick: bool = False, workers: int = 2, simulate: bool = True,
             progress: bool = True) -> pd.DataFrame:
    from spatten.eval import plots
    from spatten.eval.sweep import load_sweep, run_sweep
    from spatten.eval.tasks import glue_task
    from spatten.eval.visual import kept_tokens_by_layer
    from spatten.models import load_model
    from spatten.training.heads import train_head

    out = Path(out)
    spec = demo_sweep(out, quick, simulate)
    sweep = load_sweep(spec)
    encoder = load_model("minilm")
    # fit the SST-2 head once, here, so parallel workers find it in the cache instead of racing to fit it
    train_head(encoder, glue_task("sst-2"), n_train=spec["options"]["glue"]["head_train"])
    table = run_sweep(sweep, workers=workers, progress=progress)
    shown = demo_table(table)
    atomic_write_text(out / "table.md", markdown_table(shown))
    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    plots.metric_vs_keep(table, out / "metric_vs_keep")
    plots.kept_per_layer(table, out / "kept_per_layer")
    if simulate:
        plots.pareto(table, out / "pareto")
    tokens, kept = kept_tokens_by_layer(encoder, {"token_keep": 0.3}, DEMO_SENTENCE)
    plots.sentence_kept_tokens(tokens, kept, out / "sentence_tokens",
                               title="all-MiniLM-L6-v2, token keep 0.3: tokens entering each layer")
    atomic_write_text(out / "sentence_tokens.json", json.dumps({"tokens": tokens, "kept_by_layer": kept}))
    return shown
