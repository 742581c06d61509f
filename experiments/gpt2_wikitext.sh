#!/usr/bin/env bash
# Train the small GPT-2 on local WikiText-2/PTB valid text (CPU, a few minutes), then sweep KV pruning on it.
set -euo pipefail
out=${1:-$HOME/.cache/spatten/gpt2-wikitext}
python -m spatten train-gpt2 --out "$out" --steps 300
python -m spatten eval lm --model "$out" --data wikitext-2-tokens --max-tokens 1024 --window 128 --stride 64 \
    --set token_keep=0.5 --out results/gpt2-wikitext/keep0.5
