"""The pictures a pruning study needs, from a results table (see spatten.eval.sweep.collect).

Every function returns a matplotlib Figure and, given `path` (without suffix), saves it as PNG and PDF.
Figures are built without pyplot (no global figure registry, no display needed: PNG/PDF render through
Agg); in a notebook the returned figure displays itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

LOWER_IS_BETTER = {"perplexity"}
HARDWARE_AXES = (("hw.speedup_vs_dense", "simulated speedup vs dense (x)"),
                 ("hw.dram_reduction_vs_dense", "DRAM traffic reduction vs dense (x)"),
                 ("hw.energy_reduction_vs_dense", "energy reduction vs dense (x)"))


def save(fig, path: str | Path | None) -> list[Path]:
    """Write fig as path.png and path.pdf (atomically: temp name, then rename)."""
    if path is None:
        return []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".pdf"):
        final = path.with_suffix(suffix)
        tmp = final.with_name(f".{final.name}.tmp")
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format=suffix[1:])
        tmp.replace(final)
        written.append(final)
    return written


def _require(table: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"the results table lacks columns {missing} (was the hardware simulated?)")
    if table.empty:
        raise ValueError("the results table is empty")


def _series_label(row) -> str:
    return f"{row['task']} / {row['model']}"


def relative_metric(table: pd.DataFrame) -> pd.Series:
    """Headline metric relative to the same task/model at token_keep 1.0 (1 = unchanged, higher = better).

    Perplexity is inverted (dense / pruned) so that every curve reads "higher is better".
    """
    _require(table, ["task", "model", "metric", "value", "config.token_keep"])
    out = pd.Series(np.nan, index=table.index)
    for _, group in table.groupby(["task", "model"]):
        dense = group[group["config.token_keep"] == 1.0]
        if dense.empty:
            continue
        base = float(dense["value"].iloc[0])
        lower = group["metric"].iloc[0] in LOWER_IS_BETTER
        out[group.index] = base / group["value"] if lower else group["value"] / base
    return out


def metric_vs_keep(table: pd.DataFrame, path=None, x: str = "config.token_keep"):
    """One panel per task: headline metric against the token keep ratio (one line per model)."""
    _require(table, ["task", "model", "metric", "value", x])
    tasks = list(dict.fromkeys(table["task"]))
    fig = Figure(figsize=(3.6 * len(tasks), 3.2))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = table[table["task"] == task]
        for model, g in sub.groupby("model"):
            g = g.sort_values(x)
            ax.plot(g[x], g["value"], marker="o", label=model)
        ax.set_title(task)
        ax.set_xlabel("token keep ratio" if x == "config.token_keep" else x)
        ax.set_ylabel(sub["metric"].iloc[0])
        ax.invert_xaxis()  # more pruning to the right
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("accuracy vs pruning")
    fig.tight_layout()
    save(fig, path)
    return fig


def pareto(table: pd.DataFrame, path=None):
    """The Pareto view: relative metric against simulated speedup, DRAM reduction and energy reduction."""
    _require(table, ["task", "model", "config.token_keep"] + [c for c, _ in HARDWARE_AXES])
    rel = relative_metric(table)
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, len(HARDWARE_AXES), sharey=True)
    for ax, (column, label) in zip(axes, HARDWARE_AXES):
        for key, g in table.assign(rel=rel).groupby(["task", "model"]):
            g = g.sort_values("config.token_keep", ascending=False)  # follow the pruning, not the x order
            ax.plot(g[column], g["rel"], marker="o", label=f"{key[0]} / {key[1]}")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("metric relative to unpruned\n(perplexity inverted)")
    # One legend below the panels, so it never covers a point.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(len(labels), 4), frameon=False)
    fig.suptitle("what pruning costs against what the hardware gains")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save(fig, path)
    return fig


def kept_per_layer(table: pd.DataFrame, path=None, task: str | None = None):
    """Fraction of tokens kept (keys fetched / KV length) per layer, one line per token keep ratio."""
    _require(table, ["task", "kept.token_keep_per_layer", "config.token_keep"])
    tasks = [task] if task is not None else list(dict.fromkeys(table["task"]))
    fig = Figure(figsize=(3.6 * len(tasks), 3.2))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    for ax, name in zip(axes[0], tasks):
        sub = table[table["task"] == name].sort_values("config.token_keep", ascending=False)
        for _, row in sub.iterrows():
            per_layer = row["kept.token_keep_per_layer"]
            per_layer = json.loads(per_layer) if isinstance(per_layer, str) else per_layer
            ax.plot(range(len(per_layer)), per_layer, marker=".", label=f"keep {row['config.token_keep']:g}")
        ax.set_title(name)
        ax.set_xlabel("layer")
        ax.set_ylabel("tokens kept (fraction)")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
    return fig


def sentence_kept_tokens(tokens: Sequence[str], kept_by_layer: Sequence[Sequence[int]], path=None, title=None):
    """The paper's visual: one line per layer with the tokens that entered it; pruned tokens in light grey.

    tokens: the sentence's tokens; kept_by_layer: per layer, the positions that entered it.
    """
    if not tokens or not kept_by_layer:
        raise ValueError("need tokens and at least one layer of kept positions")
    n_layers = len(kept_by_layer)
    # monospace layout in character units, so the columns line up from layer to layer
    starts = np.cumsum([0] + [len(t) + 1 for t in tokens[:-1]])
    width = starts[-1] + len(tokens[-1])
    fig = Figure(figsize=(1.2 + 0.11 * width, 0.42 * n_layers + 0.9))
    ax = fig.subplots()
    for layer, kept in enumerate(kept_by_layer):
        kept = set(int(k) for k in kept)
        y = n_layers - 1 - layer
        for pos, tok in enumerate(tokens):
            alive = pos in kept
            ax.text(starts[pos], y, tok, fontsize=10, family="monospace", va="center",
                    color="black" if alive else "#c8c8c8", weight="bold" if alive else "normal")
        ax.text(-1, y, f"layer {layer}", ha="right", va="center", fontsize=8, color="#555555")
    ax.set_xlim(-9, width + 1)
    ax.set_ylim(-0.7, n_layers - 0.3)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    save(fig, path)
    return fig
