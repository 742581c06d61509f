"""Sentence embeddings from a (possibly patched) encoder: mean of the last hidden states over real tokens.

With cascade token pruning only the tokens that entered the last layer carry final states; the patch hands
the encoder output back at full length (a pruned position holds the state that entered the layer that pruned
it), so the mean runs over the survivors, read from the handle (`last_kept_positions[-1]`, -1 marks an empty
slot). That is what the pruned model really computed: a pruned token never reaches the output.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _output_mask(hidden, attention_mask, handle):
    """bool[B, n] marking the real tokens among the n output positions that survived to the last layer."""
    import torch

    positions = list(getattr(handle, "last_kept_positions", None) or []) if handle is not None else []
    n = hidden.shape[1]
    real = attention_mask.bool()
    if not positions:
        if n != real.shape[1]:
            raise RuntimeError(f"the encoder returned {n} positions for {real.shape[1]} inputs and no patch "
                               "handle with last_kept_positions says which tokens they are")
        return real
    last = positions[-1]
    if last.shape[0] != hidden.shape[0]:
        raise RuntimeError(f"last_kept_positions[-1] has batch {last.shape[0]}, the output has {hidden.shape[0]}")
    if n == real.shape[1]:  # full-length output: mark the survivors
        survived = torch.zeros_like(real)
        rows = torch.arange(last.shape[0]).unsqueeze(1).expand_as(last)
        ok = last >= 0
        survived[rows[ok], last[ok]] = True
        return survived & real
    if last.shape[1] != n:
        raise RuntimeError(f"last_kept_positions[-1] has {last.shape[1]} slots, the output has {n} positions")
    return (last >= 0) & real.gather(1, last.clamp(min=0))


def embed_sentences(model, tokenizer, texts: Sequence[str], *, batch_size: int = 32, max_length: int = 128,
                    handle=None, normalize: bool = True, on_batch=None) -> np.ndarray:
    """float32 [N, hidden] embeddings, in the order of `texts`. on_batch(): called after each batch (progress).

    Batches are formed from length-sorted texts so padding (which pruning would have to skip) stays small.
    """
    import torch

    if len(texts) == 0:
        raise ValueError("no texts to embed")
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = _output_mask(hidden, enc["attention_mask"], handle).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.float().numpy()
            if on_batch is not None:
                on_batch()
    return out


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays."""
    na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na, 1e-12)
