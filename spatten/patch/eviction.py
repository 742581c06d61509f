"""Generation-stage eviction policy for decoders: what score a KV slot is evicted by, which slots are never
evicted, how the score evolves between decode steps, and pruning the cache after a dense prefill.

The runners keep the mechanics (slots, cascade, cache writes); this module holds the choices that
`SpAttenConfig` exposes for generation (docs/generation.md):

- importance_norm "sum" | "mean" | "last": `accumulate` adds (or, for "last", overwrites) a layer's attention
  into `runner.importance [B, N]`; "mean" also counts in `runner.exposure [B, N]` how many (query row, head)
  pairs could attend to each slot, and `scores` divides by it.
- importance_decay: `between_steps` multiplies the accumulated importance (and exposure) once per decode step.
- sink_tokens / recent_window: `protected` marks the slots the top-k must keep.
- prefill_pruning "after": `prunes_inside_forward` says whether a forward evicts between its layers.
"""

from __future__ import annotations

import warnings

import torch


class SpAttenCausalityWarning(UserWarning):
    """A multi-token forward with token pruning is not what token-by-token decoding would compute."""


def _norm(runner) -> str:
    """The importance normalisation in force: the generation options act on decoders only."""
    return runner.config.importance_norm if runner.spec.kind == "decoder" else "sum"


def importance_rows(runner, query_valid: torch.Tensor) -> torch.Tensor:
    """The query rows whose attention counts toward importance: all valid rows, or the last one for "last".

    query_valid: bool [B, Lq] -> bool [B, Lq].
    """
    if _norm(runner) != "last":
        return query_valid
    positions = torch.arange(query_valid.shape[1], device=query_valid.device).expand_as(query_valid)
    last = torch.where(query_valid, positions, -1).amax(dim=1, keepdim=True)
    return positions == last


def _visible_counts(rows: torch.Tensor, mask: torch.Tensor | None, is_causal: bool, keys: int) -> torch.Tensor:
    """How many of the counted query rows rows [B, Lq] may attend to each key -> float32 [B, Lk]."""
    if mask is None and not is_causal:
        return rows.sum(-1, keepdim=True).float().expand(-1, keys)
    if mask is None:  # plain causal over a fresh prompt: key j is seen by rows j..Lq-1
        allowed = torch.ones(rows.shape[1], keys, dtype=torch.bool, device=rows.device).tril()[None]
    else:
        allowed = mask[:, 0].expand(rows.shape[0], -1, -1)
    return (allowed & rows[:, :, None]).sum(1).float()


def accumulate(runner, importance: torch.Tensor, kslot: torch.Tensor, key_valid: torch.Tensor,
               rows: torch.Tensor, mask: torch.Tensor | None, is_causal: bool, heads_ran: int) -> None:
    """Fold one layer's token importance [B, Lk] (probabilities summed over heads_ran heads and `rows`) into
    runner.importance [B, N] at slots kslot [B, Lk]; padding keys (key_valid False) get nothing."""
    contribution = importance.masked_fill(~key_valid, 0.0)
    norm = _norm(runner)
    if norm == "last":
        current = runner.importance.gather(1, kslot)
        runner.importance.scatter_(1, kslot, torch.where(key_valid, contribution, current))
        return
    runner.importance.scatter_add_(1, kslot, contribution)
    if norm == "mean":
        seen = _visible_counts(rows, mask, is_causal, kslot.shape[1]) * heads_ran
        runner.exposure.scatter_add_(1, kslot, seen.masked_fill(~key_valid, 0.0))


def between_steps(runner) -> None:
    """Rescale the accumulated importance before a decode step adds to it (the traces' rescale flag)."""
    decay = runner.config.importance_decay
    if decay < 1.0 and runner.config.importance_norm != "last":
        runner.importance.mul_(decay)
        runner.exposure.mul_(decay)


def scores(runner, kslot: torch.Tensor) -> torch.Tensor:
    """The eviction score [B, Lk] of slots kslot [B, Lk] (higher = keep)."""
    importance = runner.importance.gather(1, kslot)
    if _norm(runner) == "mean":
        return importance / runner.exposure.gather(1, kslot).clamp_min(1.0)
    return importance


def protected(runner, kslot: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
    """bool [B, Lk]: slots the eviction must keep (sink tokens, recent window, the token being generated).

    Sink and recent are counted in real (non-padding) tokens of each sequence; None when nothing is protected.
    """
    config = runner.config
    protect = None
    if runner.decoding:
        protect = torch.zeros_like(valid)
        protect[:, -1] = True  # the token being generated is kept at its own step
    if config.sink_tokens or config.recent_window:
        rank = runner.pad.long().cumsum(1) - 1  # [B, N]: index of each slot among the real tokens
        real = runner.pad.sum(1, keepdim=True)
        slot_rank = rank.gather(1, kslot)
        window = (slot_rank < config.sink_tokens) | (slot_rank >= real - config.recent_window)
        protect = window if protect is None else protect | window
    return protect


def prunes_inside_forward(runner, length: int) -> bool:
    """Whether this forward evicts between its layers; warns once per patch when a multi-token forward's
    outputs therefore differ from token-by-token decoding (`model(ids, labels=ids)` is then not causal)."""
    inside = runner.decoding or runner.config.prefill_pruning == "inside"
    if length > 1 and runner.config.prunes_tokens and not getattr(runner, "_warned_causality", False):
        runner._warned_causality = True
        if inside:
            message = ("spatten.patch: this forward of {n} tokens prunes the KV cache between its layers using "
                       "attention from later tokens of the same forward (the prefill sees the future): its logits "
                       "and loss are not those of token-by-token decoding through the cache")
        else:
            message = ("spatten.patch: this forward of {n} tokens attends densely (prefill_pruning='after' prunes "
                       "the cache only when it ends): its logits and loss are the unpruned model's, not those of "
                       "token-by-token decoding through the pruned cache")
        warnings.warn(message.format(n=length) + ". Harmless for a prompt whose own logits are not scored; for a "
                      "causal loss score token by token through the cache (spatten.eval.lm.decoded_logits)",
                      SpAttenCausalityWarning, stacklevel=4)
    return inside


def check_positions(runner, continuing: bool, position_ids) -> None:
    """When layer 0 evicts, the cache no longer counts the tokens seen, and transformers would number a new token
    by the cache length: a continuing forward must then pass position_ids (generate() does)."""
    if (continuing and position_ids is None and runner.config.prunes_tokens and runner.token_ratios[0] < 1.0
            and int(runner.evicted_at.eq(0).sum()) > 0):
        raise ValueError("spatten.patch: layer 0 evicts KV entries (schedule.token_unpruned_min=0), so the cache "
                         "length is no longer the position of the next token; pass position_ids (generate() does)")


def prune_cache_after_prefill(runner, evict) -> None:
    """prefill_pruning "after": cascade-evict every layer's cache (layers in order) once the prefill has run.

    evict: the runner's `_evict(layer, kslot, valid, k, v, cache)`.
    """
    from spatten.patch.compat import cache_layer

    cache = runner._layer_cache
    if cache is None or not runner.config.prunes_tokens:
        return
    for layer in range(runner.spec.layers):  # layer 0 keeps everything unless token_unpruned_min is 0
        kslot = runner.kslots[layer]
        storage = cache_layer(cache, layer)
        valid = (runner.pad.gather(1, kslot) & runner.kvalid[layer]
                 & (runner.evicted_at.gather(1, kslot) >= layer))
        kslot, valid, _, _ = evict(layer, kslot, valid, storage.keys, storage.values, cache)
        runner.kslots[layer], runner.kvalid[layer] = kslot, valid
