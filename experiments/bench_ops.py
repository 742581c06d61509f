"""CPU benchmark of the spatten ops as time ratios against PyTorch baselines measured in the same run.

    python experiments/bench_ops.py [--threads 1] [--quick] [--out FILE]

top-k: spatten.ops.topk_indices (radix/quick-select + order-preserving filter) vs torch.topk followed by a sort
of the indices (the same result in plain torch). progressive attention: the fused per-(batch, head) kernel vs
plain softmax(scaling * Q K^T) V on float keys, and vs the pure-PyTorch reference chain (ops_ref) that computes
the same quantized result. attention with importance: the fused kernel vs the torch chain it replaced in
spatten.patch (bmm, masked_fill_, softmax, nan_to_num_, bmm, then token_importance on the probabilities), with a
causal mask at the BERT (12x512x512) and GPT-2 prefill (12x992x992) shapes. Timings interleave the contenders and take medians, so machine load hits both alike.
One thread by default: on a shared machine, multi-threaded runs measure the OpenMP barrier waiting for a
descheduled thread more than the kernels (use --threads to change it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from spatten import ops, ops_ref
from spatten.atomic import atomic_write_text

TOPK_SIZES = [128, 1024, 4096, 16384]
ROW_SHAPES = {"BERT 12x128": 12 * 128, "GPT-2 12x1": 12}
KEEP_RATIOS = [0.5, 0.1]
HEAD_DIM = 64


def median_seconds(contenders: list[Callable[[], object]], budget_s: float) -> list[float]:
    """Median wall time of each contender, run alternately after a warm-up, within about budget_s in total."""
    for fn in contenders:
        fn()  # warm-up (allocations, thread pool)
    start = time.perf_counter()
    for fn in contenders:
        fn()
    one_round = time.perf_counter() - start
    repeats = max(3, min(40, int(budget_s / max(one_round, 1e-9))))
    samples: list[list[float]] = [[] for _ in contenders]
    for _ in range(repeats):
        for i, fn in enumerate(contenders):
            t0 = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - t0)
    return [statistics.median(s) for s in samples]


def bench_topk(sizes: list[int], budget_s: float) -> list[str]:
    lines = [
        "| rows | n | k | spatten (µs) | torch.topk + sort (µs) | speedup |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    gen = torch.Generator().manual_seed(0)
    for label, rows in ROW_SHAPES.items():
        for n in sizes:
            scores = torch.randn(rows, n, generator=gen)
            for keep in KEEP_RATIOS:
                k = max(1, int(n * keep))
                ours, base = median_seconds(
                    [
                        lambda: ops.topk_indices(scores, k),
                        lambda: torch.topk(scores, k, sorted=False).indices.sort(dim=-1).values,
                    ],
                    budget_s,
                )
                lines.append(f"| {label} | {n} | {k} | {ours * 1e6:.0f} | {base * 1e6:.0f} | {base / ours:.2f}x |")
    return lines


def bench_progressive(sizes: list[int], budget_s: float) -> list[str]:
    lines = [
        "| B, H, Lq, Lk | rows refetched | spatten fused (µs) | plain attention (µs) | ops_ref chain (µs) "
        "| vs plain | vs ops_ref |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    gen = torch.Generator().manual_seed(1)
    scaling = HEAD_DIM**-0.5
    for label, (h, lq) in {"BERT": (12, 128), "GPT-2": (12, 1)}.items():
        for lk in sizes:
            q = torch.randn(1, h, lq, HEAD_DIM, generator=gen) * 2
            k = torch.randn(1, h, lk, HEAD_DIM, generator=gen)
            v = torch.randn(1, h, lk, HEAD_DIM, generator=gen)
            msb, lsb, scale = ops.quantize_msb_lsb(k, 6, 4, "head")
            args = (q, msb, lsb, scale, v, None, 0.1, 4, scaling)
            refetched = ops.progressive_attention(*args)[2].float().mean().item()
            ours, plain, chain = median_seconds(
                [
                    lambda: ops.progressive_attention(*args),
                    lambda: torch.softmax(scaling * q @ k.transpose(-1, -2), dim=-1) @ v,
                    lambda: ops_ref.progressive_attention(*args),
                ],
                budget_s,
            )
            lines.append(
                f"| 1, {h}, {lq}, {lk} ({label}) | {refetched:.0%} | {ours * 1e6:.0f} | {plain * 1e6:.0f} "
                f"| {chain * 1e6:.0f} | {plain / ours:.2f}x | {chain / ours:.2f}x |"
            )
    return lines


def torch_chain_with_importance(q, k, v, mask, scaling, query_mask):
    """What spatten.patch.core.attend did before the fused op: probabilities materialised, then summed."""
    logits = (q.float() * scaling) @ k.float().transpose(-1, -2)
    logits.masked_fill_(~mask, -float("inf"))
    probs = torch.softmax(logits, dim=-1)
    probs.nan_to_num_(nan=0.0)
    return probs @ v.float(), ops.token_importance(probs, query_mask)


ATTENTION_SHAPES = {"BERT": (12, 512), "GPT-2 prefill": (12, 992)}


def bench_attention_importance(budget_s: float, quick: bool) -> list[str]:
    lines = [
        "| B, H, Lq = Lk | spatten fused (ms) | torch chain (ms) | speedup |",
        "|---|---:|---:|---:|",
    ]
    gen = torch.Generator().manual_seed(2)
    scaling = HEAD_DIM**-0.5
    for label, (h, n) in ATTENTION_SHAPES.items():
        n = min(n, 128) if quick else n
        q, k, v = (torch.randn(1, h, n, HEAD_DIM, generator=gen) for _ in range(3))
        mask = torch.ones(n, n, dtype=torch.bool).tril()[None, None]
        query_mask = torch.ones(1, n, dtype=torch.bool)
        ours, chain = median_seconds(
            [
                lambda: ops.attention_with_importance(q, k, v, mask, scaling, query_mask),
                lambda: torch_chain_with_importance(q, k, v, mask, scaling, query_mask),
            ],
            budget_s,
        )
        lines.append(f"| 1, {h}, {n} ({label}) | {ours * 1e3:.2f} | {chain * 1e3:.2f} | {chain / ours:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two sizes and short budgets (smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch / ATen intra-op threads for both sides")
    parser.add_argument("--out", help="also write the markdown here (atomically)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = TOPK_SIZES[:2] if args.quick else TOPK_SIZES
    budget = 0.2 if args.quick else 2.0
    header = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of interleaved runs; "
        "speedup = baseline time / spatten time (higher is better)."
    )
    text = "\n".join(
        [
            header,
            "",
            "**top-k** (`topk_indices` vs `torch.topk(sorted=False)` + sort of the indices):",
            "",
            *bench_topk(sizes, budget),
            "",
            f"**progressive attention** (D = {HEAD_DIM}, 6+4-bit per-head keys, threshold 0.1):",
            "",
            *bench_progressive(sizes, budget),
            "",
            f"**attention with importance** (D = {HEAD_DIM}, causal mask; fused op vs the torch chain it replaces):",
            "",
            *bench_attention_importance(budget, args.quick),
            "",
        ]
    )
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
