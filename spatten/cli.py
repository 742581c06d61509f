"""`spatten` command line.

    spatten demo [--out results/demo] [--quick] [--workers 2]
    spatten eval glue --task sts-b [--model PATH] [--config cfg.yaml] [--set token_keep=0.5] [--out DIR]
    spatten eval lm --data wikitext-2 [--model PATH] [--config cfg.yaml] [--set token_keep=0.5] [--out DIR]
    spatten sweep sweep.yaml [--workers N] [--out DIR]
    spatten plot RESULTS_DIR                      (plots from a sweep's results)
    spatten train-head --task sst-2 [--model PATH] [--n-train 2000] [--cache-dir DIR]
    spatten train-gpt2 --out DIR [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parse_sets(pairs: list[str]) -> dict:
    """--set field=value pairs (values parsed as YAML: 0.5, [6, 4], null)."""
    import yaml

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"--set expects field=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _config(args) -> object:
    from spatten.eval.runners import resolve_config

    cfg = resolve_config(args.config)
    overrides = _parse_sets(args.set)
    if overrides:
        merged = {**cfg.to_dict(), **overrides}
        cfg = resolve_config(merged)
    return cfg


def _print_result(result: dict) -> None:
    hw = result.get("hardware") or {}
    print(f"{result['task']} / {result['model']}: {result['headline']['name']} = {result['headline']['value']:.4g}"
          f" on {result['n_examples']} {'tokens' if result['kind'] == 'lm' else 'examples'}")
    print("  metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items()))
    kept = result["kept"]
    print(f"  kept: tokens {kept['token_keep_measured']:.3f}, heads {kept['head_keep_measured']:.3f}, "
          f"values {kept['value_keep_measured']:.3f}")
    if hw:
        print(f"  hardware ({hw['preset']}): {hw['cycles']:,} cycles, {hw['dram_bytes']:,} DRAM bytes, "
              f"{hw['energy_joules'] * 1e6:.3g} uJ; speedup {hw['speedup_vs_dense']:.3g}x, "
              f"DRAM reduction {hw['dram_reduction_vs_dense']:.3g}x, energy reduction "
              f"{hw['energy_reduction_vs_dense']:.3g}x")


def _eval(args) -> int:
    from spatten.eval import run_glue, run_lm

    common = dict(model=args.model, config=_config(args), preset=args.preset, simulate=not args.no_simulate,
                  out_dir=args.out, data_dir=args.data_dir, seed=args.seed)
    if args.what == "glue":
        result = run_glue(args.task, n_examples=args.n_examples, batch_size=args.batch_size,
                          max_length=args.max_length, head_train=args.n_train, cache_dir=args.cache_dir, **common)
    else:
        result = run_lm(args.data, max_tokens=args.max_tokens, window=args.window, stride=args.stride, **common)
    _print_result(result)
    if args.out:
        print(f"  written to {args.out}/ (result.json, config.yaml, trace.csv"
              f"{', hardware.json' if result.get('hardware') else ''})")
    return 0


def _sweep(args) -> int:
    from spatten.eval.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.file, args.out)
    print(f"sweep: {len(sweep.runs)} runs -> {sweep.out}")
    table = run_sweep(sweep, workers=args.workers, progress=not args.no_progress)
    print(f"results table: {sweep.out / 'results.csv'} ({len(table)} runs)")
    return 0


def _plot(args) -> int:
    from spatten.eval import plots
    from spatten.eval.sweep import collect

    table = collect(args.results)
    if table.empty:
        raise SystemExit(f"no result.json under {args.results}")
    out = Path(args.out or args.results)
    plots.metric_vs_keep(table, out / "metric_vs_keep")
    plots.kept_per_layer(table, out / "kept_per_layer")
    if "hw.speedup_vs_dense" in table.columns:
        plots.pareto(table, out / "pareto")
    print(f"plots written to {out}/ (png + pdf)")
    return 0


def _demo(args) -> int:
    from spatten.eval.demo import run_demo

    shown = run_demo(args.out, quick=args.quick, workers=args.workers, simulate=not args.no_simulate)
    with_pd_options(lambda: print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}")))
    print(f"\nresults, table.md and plots (png + pdf) in {args.out}/")
    return 0


def with_pd_options(fn):
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        return fn()


def _train_head(args) -> int:
    from spatten.eval.tasks import glue_task
    from spatten.models import load_model
    from spatten.training.heads import train_head

    loaded = load_model(args.model, kind="encoder")
    head = train_head(loaded, glue_task(args.task), n_train=args.n_train, seed=args.seed, cache_dir=args.cache_dir,
                      data_dir=args.data_dir, refresh=args.refresh)
    print(f"{args.task} head on {loaded.name}: {head.n_train} training examples, "
          f"training accuracy {head.train_accuracy:.3f} (cached)")
    return 0


def _train_gpt2(args) -> int:
    from spatten.training.gpt2 import train_gpt2

    summary = train_gpt2(args.out, steps=args.steps, corpora=args.corpora, n_layer=args.layers,
                         n_embd=args.dim, n_head=args.heads, seq_len=args.seq_len, seed=args.seed,
                         data_dir=args.data_dir)
    print(json.dumps(summary, indent=1))
    return 0


def _add_eval_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name (minilm, stories260K) or a local directory")
    p.add_argument("--config", default=None, help="SpAttenConfig YAML file")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a SpAttenConfig field")
    p.add_argument("--out", default=None, help="directory for result.json, trace.csv, hardware.json")
    p.add_argument("--preset", default="spatten", help="simulator preset")
    p.add_argument("--no-simulate", action="store_true", help="skip the hardware simulation")
    p.add_argument("--data-dir", default=None, help="data directory (default $SPATTEN_DATA_DIR)")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spatten", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job: accuracy vs pruning next to simulated speedup and energy")
    demo.add_argument("--out", default="results/demo")
    demo.add_argument("--quick", action="store_true", help="tiny subsets (a smoke run)")
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--no-simulate", action="store_true")
    demo.set_defaults(func=_demo)

    ev = sub.add_parser("eval", help="one evaluation run").add_subparsers(dest="what", required=True)
    glue = ev.add_parser("glue", help="a GLUE dev set with an encoder")
    glue.add_argument("--task", default="sts-b")
    glue.add_argument("--n-examples", type=int, default=None, help="first N dev examples (default: all)")
    glue.add_argument("--batch-size", type=int, default=32)
    glue.add_argument("--max-length", type=int, default=128)
    glue.add_argument("--n-train", type=int, default=2000, help="training examples for the task head")
    glue.add_argument("--cache-dir", default=None, help="where task heads are cached (default ~/.cache/spatten)")
    _add_eval_common(glue)
    glue.set_defaults(func=_eval)
    lm = ev.add_parser("lm", help="perplexity of a decoder (sliding window), KL and agreement with the dense model")
    lm.add_argument("--data", default="wikitext-2", help="wikitext-2, wikitext-103, ptb, ... or stories")
    lm.add_argument("--max-tokens", type=int, default=1024)
    lm.add_argument("--window", type=int, default=256)
    lm.add_argument("--stride", type=int, default=128)
    _add_eval_common(lm)
    lm.set_defaults(func=_eval)

    sw = sub.add_parser("sweep", help="run a sweep file (resumable)")
    sw.add_argument("file")
    sw.add_argument("--workers", type=int, default=1)
    sw.add_argument("--out", default=None, help="override the sweep's output directory")
    sw.add_argument("--no-progress", action="store_true")
    sw.set_defaults(func=_sweep)

    pl = sub.add_parser("plot", help="plots from a sweep's results directory")
    pl.add_argument("results")
    pl.add_argument("--out", default=None)
    pl.set_defaults(func=_plot)

    th = sub.add_parser("train-head", help="fit and cache a GLUE task head on a frozen encoder")
    th.add_argument("--task", default="sst-2")
    th.add_argument("--model", default=None)
    th.add_argument("--n-train", type=int, default=2000)
    th.add_argument("--cache-dir", default=None)
    th.add_argument("--data-dir", default=None)
    th.add_argument("--seed", type=int, default=0)
    th.add_argument("--refresh", action="store_true", help="refit even if cached")
    th.set_defaults(func=_train_head)

    tg = sub.add_parser("train-gpt2", help="train a small GPT-2 on local WikiText/PTB text")
    tg.add_argument("--out", required=True)
    tg.add_argument("--steps", type=int, default=300)
    tg.add_argument("--corpora", nargs="+", default=["wikitext-2-valid", "ptb-valid"])
    tg.add_argument("--layers", type=int, default=4)
    tg.add_argument("--dim", type=int, default=128)
    tg.add_argument("--heads", type=int, default=4)
    tg.add_argument("--seq-len", type=int, default=128)
    tg.add_argument("--seed", type=int, default=0)
    tg.add_argument("--data-dir", default=None)
    tg.set_defaults(func=_train_gpt2)
    return parser


def main(argv: list[str] | None = None) -> int:
    from spatten.eval.sweep import SweepRunsFailed

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as err:
        # user errors (missing data, bad config, unknown task) read better without a traceback
        print(f"spatten {args.command}: error: {err}", file=sys.stderr)
        return 2
    except SweepRunsFailed as err:
        print(f"spatten {args.command}: {err}", file=sys.stderr)
        return 1
