"""SpAtten's generation-stage pruning next to kvpress presses at equal measured KV budget (the README table).

    make peers                      # builds build/peers-venv once (kvpress 0.5.5, transformers 5.2), then this
    python experiments/compare_kvpress.py --out results/compare_kvpress [--passages 64] [--quick]

Writes, atomically, one CSV per (model, data) and compare_kvpress.md with every table and the protocol. The
jobs run in parallel processes, one torch thread each (--jobs, default 2).
"""

from __future__ import annotations

import argparse
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from spatten.atomic import atomic_write_text

KEEPS = (0.7, 0.5, 0.3)


def load(model_name: str):
    from spatten.models import LoadedModel, load_model

    if model_name == "random-llama":
        from spatten.testing import tiny_model

        model = tiny_model("llama", layers=4, heads=4, hidden=64, kv_heads=2, max_position_embeddings=512)
        return LoadedModel("random-llama", "decoder", model, None, None)
    return load_model(model_name, kind="decoder")


def job(model_name: str, data: str, passages: int, keeps: tuple, dense: bool, kvpress: bool):
    """One process: the rows of `keeps` (and the dense row) for one model and data set."""
    import torch

    from spatten.eval import kv_compare as kc

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    loaded = load(model_name)
    protocol = kc.Protocol(passages=passages)
    texts = kc.passages(data, loaded, protocol)
    methods = kc.standard_methods(keeps, kvpress=kvpress, dense=dense)
    return kc.compare(loaded.model, methods, texts, protocol,
                      progress=lambda row: print(f"[{model_name}/{data}] {row['method']} keep={row['keep']} "
                                                 f"ppl={row['perplexity']:.3f} ({row['seconds']:.0f} s)", flush=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/compare_kvpress")
    parser.add_argument("--passages", type=int, default=64, help="stories260K/stories passages (others: a quarter)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 passages each (a smoke run)")
    parser.add_argument("--no-kvpress", action="store_true", help="SpAtten rows only (kvpress not installed)")
    args = parser.parse_args()
    n = 4 if args.quick else args.passages
    tables = {("stories260K", "stories"): max(1, n), ("stories260K", "wikitext-2"): max(1, n // 4),
              ("random-llama", "stories"): max(1, n // 4)}
    # The long table is split by keep so that the jobs balance over the workers; each job is its own process.
    jobs = [(m, d, p, (keep,), keep == KEEPS[0]) for (m, d), p in tables.items() if m == "stories260K" and d == "stories"
            for keep in KEEPS]
    jobs += [(m, d, p, KEEPS, True) for (m, d), p in tables.items() if not (m == "stories260K" and d == "stories")]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        frames = list(pool.map(job, *zip(*[(*j, not args.no_kvpress) for j in jobs])))
    import pandas as pd

    from spatten.eval import kv_compare as kc

    results = []
    for (model_name, data), passages in tables.items():
        frame = pd.concat([f for j, f in zip(jobs, frames) if j[:2] == (model_name, data)], ignore_index=True)
        atomic_write_text(Path(args.out) / f"{model_name}-{data}.csv", frame.to_csv(index=False))
        results.append((f"### {model_name}, {data}: {passages} passages", kc.markdown_table(frame),
                        frame["seconds"].sum()))
    from spatten.eval.kv_compare import Protocol

    p = Protocol()
    text = [f"## SpAtten vs kvpress at equal measured KV budget\n",
            f"Protocol: per passage, prefill {p.prompt} tokens, score the next {p.scored} teacher-forced through "
            f"the KV cache (perplexity, top-1 agreement with dense), and generate {p.greedy} greedy tokens "
            "(greedy agreement: positions equal to the dense model's). KV prefill / decode: mean over layers "
            "(and decode steps) of cache length / tokens seen, measured from the cache. HW: SpAtten simulator "
            "(preset spatten) on the first passage's decode steps, vs the same steps dense. "
            f"Total wall time {time.perf_counter() - start:.0f} s.\n"]
    for title, table, seconds in results:
        text += [f"{title} (methods' wall time {seconds:.0f} s)\n", table]
    atomic_write_text(Path(args.out) / "compare_kvpress.md", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
