"""Language-model scoring with a patched decoder: sliding-window perplexity by teacher-forced decoding.

Each window's context is prefilled in one forward, then the rest is fed one token at a time through the KV
cache, so KV-cache pruning (and value pruning, quantization) acts exactly as it would during generation.
The unpruned model scores the same windows in one causal forward; that gives the dense perplexity and the
reference distributions for KL divergence and top-1 agreement.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """ids: the window's token ids; context: how many leading tokens are prefilled (>= 1). Tokens
    ids[context:] are scored, each predicted from everything before it in the window."""

    ids: tuple[int, ...]
    context: int


def sliding_windows(ids: list[int], window: int, stride: int) -> list[Window]:
    """Windows of `window` tokens every `stride` tokens; each scores only tokens no earlier window scored.

    The first window scores everything after its first token; later ones use window - stride tokens of context.
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    if not 1 <= stride <= window - 1:
        raise ValueError(f"stride must be in [1, window - 1] = [1, {window - 1}], got {stride}")
    if len(ids) < 2:
        raise ValueError(f"need at least 2 tokens to score, got {len(ids)}")
    out = [Window(tuple(ids[:window]), 1)]
    scored_until = min(window, len(ids))
    while scored_until < len(ids):
        end = min(scored_until + stride, len(ids))
        start = max(0, end - window)
        out.append(Window(tuple(ids[start:end]), scored_until - start))
        scored_until = end
    return out


def _cache_kw(model) -> str:
    # transformers 5.2x renamed past_key_values to cache; use whichever the installed model takes
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(out):
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


def dense_logits(model, win: Window):
    """[n_scored, V] next-token logits of the unpatched model for the scored tokens of the window."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([win.ids]), use_cache=False).logits[0]
    return logits[win.context - 1:len(win.ids) - 1].float()


def decoded_logits(model, win: Window):
    """[n_scored, V] logits from prefill + one-token-at-a-time decoding (positions passed explicitly)."""
    import torch

    from spatten.patch.eviction import SpAttenCausalityWarning

    kw = _cache_kw(model)
    ids = torch.tensor([win.ids])
    rows = []
    with torch.no_grad(), warnings.catch_warnings():
        # Only the prefill's last row is scored, and its target lies beyond the prefill: nothing future is seen.
        warnings.simplefilter("ignore", SpAttenCausalityWarning)
        out = model(input_ids=ids[:, :win.context], position_ids=torch.arange(win.context)[None], use_cache=True)
    rows.append(out.logits[0, -1])
    with torch.no_grad():
        cache = _returned_cache(out)
        for t in range(win.context, len(win.ids) - 1):
            out = model(input_ids=ids[:, t:t + 1], position_ids=torch.tensor([[t]]), use_cache=True, **{kw: cache})
            cache = _returned_cache(out)
            rows.append(out.logits[0, -1])
    return torch.stack(rows).float()


def window_nll(logits, win: Window) -> float:
    """Summed negative log-likelihood (nats) of the scored tokens."""
    import torch

    targets = torch.tensor(win.ids[win.context:])
    return float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))


def sample_stories(model, n_stories: int, length: int, *, seed: int = 0, bos_token_id: int = 1,
                   temperature: float = 1.0) -> list[list[int]]:
    """In-domain text for a model whose training corpus is not at hand: sequences sampled from the
    (unpruned) model itself from BOS, with a fixed seed, so every run scores the same tokens."""
    import torch

    if n_stories < 1 or length < 2:
        raise ValueError(f"need n_stories >= 1 and length >= 2, got {n_stories} and {length}")
    gen = torch.Generator().manual_seed(seed)
    kw = _cache_kw(model)
    stories = []
    with torch.no_grad():
        for _ in range(n_stories):
            ids = [bos_token_id]
            out = model(input_ids=torch.tensor([ids]), use_cache=True)
            for t in range(1, length):
                probs = torch.softmax(out.logits[0, -1].float() / temperature, -1)
                ids.append(int(torch.multinomial(probs, 1, generator=gen)))
                if t < length - 1:
                    out = model(input_ids=torch.tensor([[ids[-1]]]), position_ids=torch.tensor([[t]]),
                                use_cache=True, **{kw: _returned_cache(out)})
            stories.append(ids)
    return stories


def agreement_stats(ref_logits: list, test_logits: list) -> tuple[float, float]:
    """Token-weighted KL(dense || pruned) and top-1 agreement over all windows."""
    import torch

    from spatten.eval.metrics import kl_and_agreement

    kl, agree = kl_and_agreement(torch.cat(ref_logits), torch.cat(test_logits))
    return kl, agree


def tokens_scored(windows: list[Window]) -> int:
    return int(np.sum([len(w.ids) - w.context for w in windows]))
