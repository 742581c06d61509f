"""GPU benchmark of the CUDA ops, as time ratios measured side by side in one run (needs a CUDA torch).

    python experiments/bench_ops_cuda.py

top-k: spatten's radix-select + order-preserving filter vs torch.topk followed by a sort of the indices
(what order-preserving selection costs in plain torch). progressive attention vs plain softmax(QK^T)V.
"""

from __future__ import annotations

import torch
from torch.utils import benchmark

from spatten import ops

TOPK_SIZES = [128, 1024, 4096, 16384]
ROW_SHAPES = {"BERT (12 heads x 128 rows)": 12 * 128, "GPT-2 (12 heads x 1 row)": 12, "batch 32 x GPT-2": 32 * 12}


def _median_us(stmt: str, env: dict) -> float:
    timer = benchmark.Timer(stmt=stmt, globals=env)
    return timer.blocked_autorange(min_run_time=0.3).median * 1e6


def bench_topk() -> list[str]:
    lines = ["| rows | n | k | spatten (us) | torch.topk+sort (us) | speedup |", "|---|---|---|---|---|---|"]
    for label, rows in ROW_SHAPES.items():
        for n in TOPK_SIZES:
            k = max(1, n // 2)
            scores = torch.randn(rows, n, device="cuda")
            env = {"ops": ops, "torch": torch, "s": scores, "k": k}
            ours = _median_us("ops.topk_indices(s, k); torch.cuda.synchronize()", env)
            base = _median_us("torch.sort(torch.topk(s, k, sorted=False).indices, -1); torch.cuda.synchronize()", env)
            lines.append(f"| {label} | {n} | {k} | {ours:.1f} | {base:.1f} | {base / ours:.2f}x |")
    return lines


def bench_progressive() -> list[str]:
    lines = ["| shape (B, H, Lq, Lk, D) | spatten progressive (us) | plain attention (us) | ratio |",
             "|---|---|---|---|"]
    for b, h, lq, lk, d in [(1, 12, 128, 128, 64), (1, 12, 1, 1024, 64), (8, 12, 1, 4096, 64), (4, 16, 512, 512, 64)]:
        q, k, v = (torch.randn(b, h, n, d, device="cuda") for n in (lq, lk, lk))
        msb, lsb, scale = ops.quantize_msb_lsb(k, 6, 4, "token")
        env = {"ops": ops, "torch": torch, "q": q, "k": k, "v": v, "msb": msb, "lsb": lsb, "scale": scale,
               "s": d**-0.5}
        ours = _median_us("ops.progressive_attention(q, msb, lsb, scale, v, None, 0.1, 4, s); "
                          "torch.cuda.synchronize()", env)
        base = _median_us("torch.softmax(s * q @ k.transpose(-1, -2), -1) @ v; torch.cuda.synchronize()", env)
        lines.append(f"| {b}, {h}, {lq}, {lk}, {d} | {ours:.1f} | {base:.1f} | {base / ours:.2f}x |")
    return lines


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench_ops_cuda.py needs a CUDA device")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("\n".join(bench_topk()))
    print()
    print("\n".join(bench_progressive()))


if __name__ == "__main__":
    main()
