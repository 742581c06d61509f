"""Wall-clock cost of spatten.patch on CPU, as ratios against the unpatched model measured in the same run.

    python experiments/bench_patch.py            # prints a markdown table

BERT-base-sized random encoder, sequence 512: token keep 0.5 (paper schedule) and keep 1.0 vs unpatched (SDPA).
GPT-2-small-sized random decoder, 992-token prompt + 32 generated tokens: token keep 0.5 and 0.3 (the paper's
ramp: early layers keep more of the cache) vs unpatched.
Batch-16, 2,048-token-context decode at KV keep 1.0 / 0.5 / 0.3 (experiments/bench_decode.py; --no-decode skips
it, --quick runs everything tiny as a smoke test).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import torch

import spatten
from spatten.config import SpAttenConfig
from spatten.patch.eviction import SpAttenCausalityWarning
from spatten.testing import random_batch, tiny_model

import bench_decode


def interleaved_medians(model, variants: dict, fn, rounds: int) -> dict:
    """Median seconds of each variant, alternating the variants round by round so that machine load hits them
    alike. A variant is None (fn on the unpatched model), a SpAttenConfig (fn on the patched model) or a function
    run instead of fn (on the unpatched model)."""
    times = {name: [] for name in variants}
    for round_index in range(rounds + 1):  # round 0 warms every variant up and is not counted
        for name, variant in variants.items():
            handle = spatten.patch(model, variant) if isinstance(variant, SpAttenConfig) else None
            start = time.perf_counter()
            (variant if callable(variant) else fn)()
            elapsed = time.perf_counter() - start
            if handle is not None:
                handle.remove()
            if round_index:
                times[name].append(elapsed)
    return {name: statistics.median(ts) for name, ts in times.items()}


def rows_for(workload: str, medians: dict) -> list[tuple]:
    base = medians["unpatched (sdpa)"]
    return [(workload if i == 0 else "", name, t, base / t) for i, (name, t) in enumerate(medians.items())]


def bench_bert(repeats: int, batch: int, quick: bool = False) -> list[tuple]:
    size = dict(layers=2, heads=4, hidden=64, intermediate_size=128) if quick else dict(
        layers=12, heads=12, hidden=768, intermediate_size=3072)
    length = 32 if quick else 512
    model = tiny_model("bert", head="Model", attn_implementation="sdpa", max_position_embeddings=512, **size)
    ids, mask = random_batch(model, batch=batch, length=length)

    def run():
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)

    pruned = SpAttenConfig(token_keep=0.5)
    variants = {"unpatched (sdpa)": None, "patched, keep 1.0": SpAttenConfig(),
                "patched, token keep 0.5": pruned,
                "bound: same token counts, no importance / top-k / gathers": shortened_layers(model, ids, pruned)}
    return rows_for(f"BERT-base, seq {length}, batch {batch}", interleaved_medians(model, variants, run, repeats))


def shortened_layers(model, ids: torch.Tensor, cfg: SpAttenConfig):
    """What the patch's token pruning would cost with zero overhead: the unpatched layers (SDPA) on hidden states
    cut to the patch's token counts (the first n tokens; layer l's output projection and FFN already at layer
    l + 1's count, where the patch drops), with no importance, top-k, gathers or trace. A bound to read the patched
    row against, not a model anyone runs."""
    encoder = model.base_model.encoder
    ratios = cfg.schedule.keep_ratios(len(encoder.layer), cfg.token_keep, "token")
    counts = [max(1, math.floor(ids.shape[1] * r + 1e-9)) for r in ratios]

    def run():
        with torch.no_grad():
            hidden = model.base_model.embeddings(input_ids=ids)
            for layer, block in enumerate(encoder.layer):
                after = counts[min(layer + 1, len(counts) - 1)]
                cut = block.attention.output.register_forward_pre_hook(
                    lambda module, args: (args[0][:, :after], args[1][:, :after]))
                try:
                    out = block(hidden[:, :counts[layer]])
                finally:
                    cut.remove()
                hidden = out[0] if isinstance(out, tuple) else out

    return run


def bench_gpt2(repeats: int, batch: int, new_tokens: int = 32, prompt: int = 992, quick: bool = False) -> list[tuple]:
    size = dict(layers=2, heads=4, hidden=64, n_inner=128, vocab_size=512) if quick else dict(
        layers=12, heads=12, hidden=768, n_inner=3072, vocab_size=50257)
    if quick:
        new_tokens, prompt = 4, 28
    model = tiny_model("gpt2", attn_implementation="sdpa", **size)
    ids, _ = random_batch(model, batch=batch, length=prompt)

    def run():
        with torch.no_grad():
            model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=0)

    variants = {"unpatched (sdpa)": None, "patched, keep 1.0": SpAttenConfig(),
                "patched, token keep 0.5": SpAttenConfig(token_keep=0.5),
                "patched, token keep 0.3": SpAttenConfig(token_keep=0.3)}
    return rows_for(f"GPT-2 small, {prompt} + {new_tokens} tokens, batch {batch}",
                    interleaved_medians(model, variants, run, repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (medians reported)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny models and lengths: a smoke run of every table")
    parser.add_argument("--no-decode", action="store_true", help="skip the batch-16 2k-context decode table")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="profile STEPS decode steps of each decode variant (torch.profiler tables)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=SpAttenCausalityWarning)
    repeats = 1 if args.quick else args.repeats
    torch.manual_seed(0)
    rows = bench_bert(repeats, args.batch, args.quick) + bench_gpt2(repeats, args.batch, quick=args.quick)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native build: {native_build()}; "
          f"medians of {repeats} interleaved rounds\n")
    print("| workload | model | seconds | speed-up vs unpatched |")
    print("|---|---|---:|---:|")
    for workload, name, seconds, ratio in rows:
        print(f"| {workload} | {name} | {seconds:.4g} | {ratio:.2f}x |")
    if not args.no_decode:
        decode_args = argparse.Namespace(quick=args.quick, llama=False, batch=16, context=2048, new_tokens=33,
                                         chunk=4, profile=args.profile)
        print()
        bench_decode.print_table(bench_decode.rows(decode_args))


def native_build() -> str:
    """Whether spatten's kernels were built with -march=native (timings depend on it)."""
    from spatten import _native

    info = _native.build_info()
    return str(getattr(info, "NATIVE_ARCH", "unknown"))


if __name__ == "__main__":
    main()
