"""Interleaved A/B of spatten.patch with the fused attention_with_importance path on and off.

    python experiments/bench_patch_fused.py [--rounds 7]

Off = attend asked for the probabilities (the torch chain bmm, masked_fill_, softmax, nan_to_num_, bmm, then
token_importance on the [B, H, Lq, Lk] map), as before the fused op. Both modes alternate in one process and the
medians are reported, so machine load hits them alike (best-of-N runs of bench_patch.py on a shared machine do not).
BERT-base-sized encoder at seq 512, token keep 0.5; GPT-2-small-sized 992-token prefill, KV keep 0.3.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import spatten
from spatten.config import SpAttenConfig
from spatten.patch import core
from spatten.testing import random_batch, tiny_model

_FUSED = core.attend


def _unfused(*args, **kwargs):
    if kwargs.get("need_importance"):
        kwargs["need_probs"] = True  # forces the probability map, as before the fused op
    return _FUSED(*args, **kwargs)


def ab(name: str, model, cfg: SpAttenConfig, run, rounds: int) -> str:
    with torch.no_grad():
        run()
        base = []
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            base.append(time.perf_counter() - start)
    times: dict[str, list[float]] = {"unfused": [], "fused": []}
    try:
        with spatten.patch(model, cfg), torch.no_grad():
            for mode in times:  # warm-up
                core.attend = _unfused if mode == "unfused" else _FUSED
                run()
            for _ in range(rounds):
                for mode in times:
                    core.attend = _unfused if mode == "unfused" else _FUSED
                    start = time.perf_counter()
                    run()
                    times[mode].append(time.perf_counter() - start)
    finally:
        core.attend = _FUSED
    b = statistics.median(base)
    off, on = statistics.median(times["unfused"]), statistics.median(times["fused"])
    return f"| {name} | {b:.3f} | {off:.3f} ({b / off:.2f}x) | {on:.3f} ({b / on:.2f}x) |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.rounds} interleaved rounds")
    print()
    print("| workload | unpatched (s) | fused off (s, speed-up) | fused on (s, speed-up) |")
    print("|---|---:|---:|---:|")
    bert = tiny_model("bert", head="Model", layers=12, heads=12, hidden=768, attn_implementation="sdpa",
                      intermediate_size=3072, max_position_embeddings=512)
    ids, mask = random_batch(bert, batch=1, length=512)
    print(ab("BERT-base, seq 512, token keep 0.5", bert, SpAttenConfig(token_keep=0.5),
             lambda: bert(input_ids=ids, attention_mask=mask), args.rounds), flush=True)
    gpt = tiny_model("gpt2", layers=12, heads=12, hidden=768, attn_implementation="sdpa", n_inner=3072,
                     vocab_size=50257)
    gids, _ = random_batch(gpt, batch=1, length=992)
    print(ab("GPT-2 small, 992-token prefill, KV keep 0.3", gpt, SpAttenConfig(token_keep=0.3),
             lambda: gpt(input_ids=gids), args.rounds), flush=True)


if __name__ == "__main__":
    main()
