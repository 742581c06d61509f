"""How SpAttenConfig.for_generation's defaults were picked: a staged search over the generation options on
stories260K (stories corpus, the compare_kvpress protocol with fewer passages), perplexity at keep 0.5 and 0.3.

    python experiments/calibrate_generation.py --passages 16 --out results/calibrate_generation.csv

Stage 1: importance_norm x prefill_pruning x layer 0 evicting or not; stage 2: sink_tokens x recent_window on the best of stage 1;
stage 3: importance_decay on the best of stage 2. Prints every row; writes all rows (atomically) as CSV.
"""

from __future__ import annotations

import argparse
import itertools
import json
import warnings

import pandas as pd

from spatten.atomic import atomic_write_text
from spatten.config import PruningSchedule, SpAttenConfig
from spatten.eval import kv_compare as kc
from spatten.eval.runners import torch_threads
from spatten.models import load_model

KEEPS = (0.5, 0.3)


def score(model, texts, protocol, ref, meta, settings: dict) -> dict:
    row = dict(settings)
    settings = dict(settings)
    layer0 = settings.pop("layer0", False)  # layer 0 evicts too (token_unpruned_min=0)
    schedule = PruningSchedule(ramp="budget", token_unpruned_fraction=0.0, token_unpruned_min=0 if layer0 else 1)
    for keep in KEEPS:
        cfg = SpAttenConfig(token_keep=keep, schedule=schedule, **settings)
        result = kc.evaluate(model, kc.spatten_method("calibration", cfg, keep), texts, protocol, ref, meta,
                             simulate=False)
        row[f"ppl@{keep}"] = result["perplexity"]
        row[f"greedy@{keep}"] = result["greedy_agreement"]
    row["objective"] = sum(row[f"ppl@{k}"] for k in KEEPS)
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=16)
    parser.add_argument("--out", default="results/calibrate_generation.csv")
    parser.add_argument("--only", help="score just these settings, JSON (e.g. a stage-1 point), then exit")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from spatten.patch.compat import describe

    loaded = load_model("stories260K", kind="decoder")
    protocol = kc.Protocol(passages=args.passages, seed=1)  # not the comparison's passages (seed 0)
    rows = []
    with torch_threads(1):
        texts = kc.passages("stories", loaded, protocol)
        ref = kc.reference(loaded.model, texts, protocol)
        meta = describe(loaded.model).meta()
        run = lambda settings: rows.append(score(loaded.model, texts, protocol, ref, meta, settings)) or rows[-1]
        if args.only:
            run(json.loads(args.only))
            return
        stage1 = [run(dict(importance_norm=n, prefill_pruning=p, layer0=z))
                  for n, p, z in itertools.product(("sum", "mean", "last"), ("inside", "after"), (False, True))]
        best = min(stage1, key=lambda r: r["objective"])
        base = dict(importance_norm=best["importance_norm"], prefill_pruning=best["prefill_pruning"],
                    layer0=best["layer0"])
        stage2 = [run(dict(base, sink_tokens=s, recent_window=w)) for s, w in itertools.product((0, 1, 4), (0, 8, 24))]
        best = min(stage2, key=lambda r: r["objective"])
        base = dict(base, sink_tokens=best["sink_tokens"], recent_window=best["recent_window"])
        for decay in (0.98, 0.9, 0.7):
            run(dict(base, importance_decay=decay))
    frame = pd.DataFrame(rows)
    atomic_write_text(args.out, frame.to_csv(index=False))
    print(frame.sort_values("objective").head(10).to_string())


if __name__ == "__main__":
    main()
