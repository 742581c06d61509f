"""`spatten` command line.

    spatten demo [--out results/demo] [--quick] [--workers 2]
    spatten eval glue --task sts-b [--model PATH] [--config cfg.yaml] [--set token_keep=0.5] [--out DIR]
    spatten eval lm --data wikitext-2 [--model PATH] [--config cfg.yaml] [--set token_keep=0.5] [--out DIR]
    spatten sweep sweep.yaml [--workers N] [--out DIR] [--keep-going] [--engine ray [--address auto]]
    spatten plot RESULTS_DIR [--out DIR]          (plots from a sweep's results)
    spatten train-head --task sst-2 [--model PATH] [--n-train 2000] [--cache-dir DIR]
    spatten train-gpt2 --out DIR [--steps 300]
    spatten --version

Bad input (a typo in a sweep file, an unknown task or preset, an out-of-range number, an unwritable output
directory) exits with status 2 and one line naming the problem, before any model loads.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path


def _parse_sets(pairs: list[str]) -> dict:
    """--set field=value pairs (values parsed as YAML: 0.5, [6, 4], null)."""
    import yaml

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set expects field=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {pair}: the value is not valid YAML ({' '.join(str(err).split())})") from None
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
              f"{hw['energy_joules'] * 1e6:.3g} uJ, {hw['seconds'] * 1e3:.3g} ms simulated (hw.seconds); "
              f"speedup {hw['speedup_vs_dense']:.3g}x, "
              f"DRAM reduction {hw['dram_reduction_vs_dense']:.3g}x, energy reduction "
              f"{hw['energy_reduction_vs_dense']:.3g}x")
    print(f"  wall time on this machine (wall_seconds): {result['wall_seconds']:.3g} s")


def _eval(args) -> int:
    from spatten.eval import run_glue, run_lm

    common = dict(model=args.model, config=_config(args), preset=args.preset, simulate=not args.no_simulate,
                  out_dir=args.out, data_dir=args.data_dir, seed=args.seed, progress=not args.no_progress)
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
    engine_options = {}
    if args.engine == "ray":
        engine_options = dict(address=args.address, cpus_per_run=args.cpus_per_run,
                              memory_per_run_gb=args.memory_per_run, retries=args.retries)
    elif args.address is not None:
        raise ValueError("--address needs --engine ray")
    print(f"sweep: {len(sweep.runs)} runs -> {sweep.out} ({args.engine} engine)")
    table = run_sweep(sweep, workers=args.workers, progress=not args.no_progress, keep_going=args.keep_going,
                      engine=args.engine, **engine_options)
    print(f"results table: {sweep.out / 'results.csv'} ({len(table)} runs)")
    return 0


def _plot(args) -> int:
    from spatten.atomic import check_writable_dir
    from spatten.eval import plots
    from spatten.eval.sweep import collect

    if not Path(args.results).is_dir():
        raise FileNotFoundError(f"results directory {args.results} not found")
    table = collect(args.results, write=False)  # plot only reads its input
    if table.empty:
        raise FileNotFoundError(f"no finished run (result.json) under {args.results}")
    out = check_writable_dir(args.out or args.results)
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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the program, the problem, where to look) and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default, unless its help already says what the default means."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default in (None, False) or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _glue_task_name(text: str) -> str:
    from spatten.eval.tasks import glue_task

    try:
        return glue_task(text).name  # aliases (sst2, STS-B) map to the listed names
    except KeyError:
        return text  # argparse then names the choices


def _add_eval_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name (minilm, stories260K) or a local directory "
                   "(default: minilm for glue, stories260K for lm)")
    p.add_argument("--config", default=None, help="SpAttenConfig YAML file (default: no pruning)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a SpAttenConfig field; the value is YAML (0.5, [6, 4], null); repeatable")
    p.add_argument("--out", default=None, help="directory for result.json, config.yaml, trace.csv, hardware.json")
    p.add_argument("--preset", default="spatten", help="simulator preset (spatten-sim --list-presets)")
    p.add_argument("--no-simulate", action="store_true", help="skip the hardware simulation")
    p.add_argument("--data-dir", default=None, help="data directory (default: $SPATTEN_DATA_DIR)")
    p.add_argument("--seed", type=int, default=0, help="seed for head training and sampled stories")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    import spatten
    from spatten.eval.runners import STORIES_CORPUS
    from spatten.eval.tasks import GLUE_TASKS, LM_CORPORA

    at_least_1, at_least_2 = _int_at_least(1), _int_at_least(2)
    parser = _Parser(prog="spatten", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {spatten.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(parent, name: str, help: str):
        return parent.add_parser(name, help=help, description=help, formatter_class=_Formatter)

    demo = command(sub, "demo", "the main job: accuracy vs pruning next to simulated speedup and energy")
    demo.add_argument("--out", default="results/demo", help="directory for runs, table.md and plots")
    demo.add_argument("--quick", action="store_true", help="tiny subsets (a smoke run)")
    demo.add_argument("--workers", type=at_least_1, default=2, help="worker processes for the sweep")
    demo.add_argument("--no-simulate", action="store_true", help="skip the hardware simulation")
    demo.set_defaults(func=_demo)

    ev = command(sub, "eval", "one evaluation run").add_subparsers(dest="what", required=True)
    glue = command(ev, "glue", "a GLUE dev set with an encoder")
    glue.add_argument("--task", default="sts-b", type=_glue_task_name, choices=sorted(GLUE_TASKS),
                      help="GLUE task")
    glue.add_argument("--n-examples", type=at_least_1, default=None, help="first N dev examples (default: all)")
    glue.add_argument("--batch-size", type=at_least_1, default=32, help="sentences per forward pass")
    glue.add_argument("--max-length", type=at_least_2, default=128, help="tokens per sentence (truncation)")
    glue.add_argument("--n-train", type=at_least_2, default=2000, help="training examples for the task head")
    glue.add_argument("--cache-dir", default=None, help="where task heads are cached (default: ~/.cache/spatten)")
    _add_eval_common(glue)
    glue.set_defaults(func=_eval)
    lm = command(ev, "lm", "perplexity of a decoder (sliding window), KL and agreement with the dense model")
    lm.add_argument("--data", default="wikitext-2", choices=sorted(LM_CORPORA) + [STORIES_CORPUS],
                    help=f"LM corpus, or {STORIES_CORPUS!r} (sampled from the unpruned model)")
    lm.add_argument("--max-tokens", type=at_least_2, default=1024, help="tokens of the corpus to score")
    lm.add_argument("--window", type=at_least_2, default=256, help="sliding window length in tokens")
    lm.add_argument("--stride", type=at_least_1, default=128, help="tokens between windows (< window)")
    _add_eval_common(lm)
    lm.set_defaults(func=_eval)

    sw = command(sub, "sweep", "run a sweep file (resumable; checked in full before any model loads)")
    sw.add_argument("file", help="sweep YAML file (see spatten.eval.sweep)")
    sw.add_argument("--out", default=None, help="output directory (default: the file's `out`)")
    sw.add_argument("--workers", type=at_least_1, default=1, help="local engine: worker processes")
    sw.add_argument("--keep-going", action="store_true",
                    help="continue past failed runs and report them at the end (default: stop at the first)")
    sw.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local processes, or one Ray task per run (pip install 'spatten[ray]')")
    sw.add_argument("--address", default=None,
                    help="ray engine: the cluster, 'auto' or HOST:PORT (default: start a local one)")
    sw.add_argument("--cpus-per-run", type=_positive_float, default=1.0, help="ray engine: CPUs each run requests")
    sw.add_argument("--memory-per-run", type=_positive_float, default=1.0,
                    help="ray engine: memory each run requests, in GiB")
    sw.add_argument("--retries", type=_int_at_least(0), default=1,
                    help="ray engine: reruns of a run whose worker process died")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    sw.set_defaults(func=_sweep)

    pl = command(sub, "plot", "plots from a sweep's results directory (which it only reads)")
    pl.add_argument("results", help="a sweep's output directory")
    pl.add_argument("--out", default=None, help="directory for the plots (default: the results directory)")
    pl.set_defaults(func=_plot)

    th = command(sub, "train-head", "fit and cache a GLUE task head on a frozen encoder")
    th.add_argument("--task", default="sst-2", type=_glue_task_name,
                    choices=sorted(n for n, t in GLUE_TASKS.items() if not t.is_regression),
                    help="GLUE classification task")
    th.add_argument("--model", default=None, help="encoder name or directory (default: minilm)")
    th.add_argument("--n-train", type=at_least_2, default=2000, help="training examples")
    th.add_argument("--cache-dir", default=None, help="where task heads are cached (default: ~/.cache/spatten)")
    th.add_argument("--data-dir", default=None, help="data directory (default: $SPATTEN_DATA_DIR)")
    th.add_argument("--seed", type=int, default=0, help="seed for the training subset")
    th.add_argument("--refresh", action="store_true", help="refit even if cached")
    th.set_defaults(func=_train_head)

    tg = command(sub, "train-gpt2", "train a small GPT-2 on local WikiText/PTB text")
    tg.add_argument("--out", required=True, help="directory for the Hugging Face model")
    tg.add_argument("--steps", type=at_least_1, default=300, help="optimizer steps")
    tg.add_argument("--corpora", nargs="+", default=["wikitext-2-valid", "ptb-valid"], choices=sorted(LM_CORPORA),
                    help="LM corpora to train on")
    tg.add_argument("--layers", type=at_least_1, default=4, help="transformer layers")
    tg.add_argument("--dim", type=at_least_1, default=128, help="hidden size")
    tg.add_argument("--heads", type=at_least_1, default=4, help="attention heads")
    tg.add_argument("--seq-len", type=at_least_2, default=128, help="training sequence length")
    tg.add_argument("--seed", type=int, default=0, help="seed for initialisation and batches")
    tg.add_argument("--data-dir", default=None, help="data directory (default: $SPATTEN_DATA_DIR)")
    tg.set_defaults(func=_train_gpt2)
    return parser


def _one_line(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"spatten: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from spatten.atomic import NotWritableError
    from spatten.eval.hardware import HardwareUnavailable
    from spatten.eval.sweep import SweepInterrupted, SweepLocked, SweepRunsFailed

    args = build_parser().parse_args(argv)
    where = f"spatten {args.command}" + (f" {args.what}" if getattr(args, "what", None) else "")
    show_before = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except (FileNotFoundError, NotWritableError, ValueError, KeyError, SweepLocked, HardwareUnavailable,
            ImportError) as err:
        # user errors (missing data, bad config, unknown task, busy or read-only directory) need no traceback
        print(f"{where}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a directory gone read-only mid-run
        print(f"{where}: error: {err.strerror or _one_line(err)}"
              f"{f': {err.filename}' if err.filename else ''}", file=sys.stderr)
        return 2
    except SweepRunsFailed as err:
        print(f"{where}: {err}", file=sys.stderr)
        return 1
    except SweepInterrupted as err:
        print(f"{where}: stopped by {err}; finished runs and results.csv are written, rerun to resume",
              file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show_before
