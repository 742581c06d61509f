"""`spatten` command line: `spatten demo`, and (as they land) `spatten eval`, `spatten sweep`."""

from __future__ import annotations

import argparse


def _demo(args: argparse.Namespace) -> int:
    import torch

    from spatten import ops

    scores = torch.tensor([[0.1, 0.7, 0.3, 0.7, 0.05, 0.9]])
    kept = ops.topk_indices(scores, 3)
    print(f"scores {scores.tolist()[0]} -> top-3 positions in order {kept.tolist()[0]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spatten", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job on the embedded default")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
