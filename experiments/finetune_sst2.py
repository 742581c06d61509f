"""Fine-tuning with token pruning in the loop: MiniLM on SST-2 at keep 0.3, dev accuracy before and after.

    SPATTEN_DATA_DIR=../shared/data python experiments/finetune_sst2.py [--steps 300] [--keep 0.3] [--out r.json]

Before: the project's standard classifier (a linear head fitted on the unpruned encoder's embeddings) run with
token pruning at --keep. After: encoder and head fine-tuned for --steps batches with that pruning active (train
mode, MiniLM's dropout), scored again at the same keep on the full SST-2 dev set (872 sentences).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from spatten.atomic import atomic_write_text
from spatten.config import SpAttenConfig
from spatten.training.finetune import finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--keep", type=float, default=0.3, help="token keep ratio at the last layer")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-dev", type=int, default=None, help="first n dev examples (default: all)")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args()
    result = finetune("sst-2", SpAttenConfig(token_keep=args.keep), steps=args.steps, batch_size=args.batch_size,
                      learning_rate=args.learning_rate, threads=args.threads, seed=args.seed, n_dev=args.n_dev)
    losses = result.losses
    print(f"SST-2 dev accuracy at token keep {args.keep} ({result.n_dev} sentences)")
    print(f"  before fine-tuning: {result.accuracy_before:.4f}")
    print(f"  after {result.steps} steps (batch {result.batch_size}): {result.accuracy_after:.4f}")
    if losses:
        head, tail = losses[:20], losses[-20:]
        print(f"  training loss: first {len(head)} steps {sum(head) / len(head):.3f}, "
              f"last {len(tail)} {sum(tail) / len(tail):.3f}; {result.seconds:.0f} s")
    if args.out:
        atomic_write_text(args.out, json.dumps(dataclasses.asdict(result), indent=2) + "\n")


if __name__ == "__main__":
    main()
