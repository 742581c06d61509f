"""Decoders (GPT-2, Llama, Mistral, Qwen2): cascade token pruning as KV-cache eviction during prefill and decode.

Every token has a KV *slot*: its column in the absolute-length 2D attention mask (what generate() passes).
Per sequence the runner keeps the padding mask over slots, the accumulated importance per slot, the layer at
which each slot was evicted, and per layer the slots its cache holds (`kslots[l]: int64 [B, Lk_l]`) and which of them are live entries
(`kvalid[l]`: a row that keeps fewer slots than its batch mates pads its cache with dead ones). Layer l
evicts, before its attention, down to ⌊T·keep(l)⌋ slots (T = slots seen) chosen by accumulated importance among
the slots still alive at layer l-1 (the cascade); a new token is kept at the step it arrives. Layer 0 never
prunes, so `cache.get_seq_length()` stays the true length and transformers' position bookkeeping stays right.
The mask is built here from slots (causality, padding, sliding window), never taken from the model.
"""

from __future__ import annotations

import warnings
import weakref

import torch

from spatten.patch import eviction
from spatten.patch.compat import (UnsupportedModelError, batch_and_length, cache_layer, forward_argument,
                                  require_evictable_cache)
from spatten.patch.runner import Runner, eager, keep_counts, select_entries, select_per_row

_CACHE_NAMES = ("cache", "past_key_values")


class DecoderRunner(Runner):
    def install(self) -> list:
        spec = self.spec
        hooks = [spec.base.register_forward_pre_hook(eager(self._begin), with_kwargs=True),
                 spec.base.register_forward_hook(eager(self._finish))]
        for layer, attn in enumerate(spec.attentions):
            hooks.append(attn.register_forward_pre_hook(eager(self._attention_pre_hook(layer)), with_kwargs=True))
        self.reset()
        self._uncached_call: tuple[int, int] | None = None  # (batch, length) of the last forward without a cache
        return hooks

    def reset(self) -> None:
        self._cache_ref = None
        self.total = 0
        self.kslots: list[torch.Tensor | None] = [None] * self.spec.layers
        self.kvalid: list[torch.Tensor | None] = [None] * self.spec.layers
        # Deferred compaction (decode speed): a layer whose evictions are not yet written to its cache holds,
        # per kept entry, its index in the cache (`physical[l]: int64 [B, Lk_l]`) and, per cache entry, its slot
        # (`physical_slots[l]: int64 [B, Lcache_l]`); None = the cache is compact (entry i is kslots[l][:, i]).
        self.physical: list[torch.Tensor | None] = [None] * self.spec.layers
        self.physical_slots: list[torch.Tensor | None] = [None] * self.spec.layers
        self._defer = False
        self.last_kept_positions = []
        self.generate_steps = self.summarize_steps = 0

    def needs_importance(self, layer: int) -> bool:
        return True  # later decode steps evict by it

    # ---- hooks -----------------------------------------------------------------------------------------------
    def _begin(self, module, args, kwargs):
        batch, length, device = batch_and_length(args, kwargs)
        self._read_forward_options(module, args, kwargs)
        cache = forward_argument(module, args, kwargs, *_CACHE_NAMES)
        mask = forward_argument(module, args, kwargs, "attention_mask")
        if cache is not None:
            require_evictable_cache(cache)
        else:
            self._warn_if_regenerating(batch, length, forward_argument(module, args, kwargs, "use_cache"))
        continuing = (cache is not None and self._cache_ref is not None and self._cache_ref() is cache
                      and self.total > 0 and cache.get_seq_length() > 0)
        if not continuing:
            if cache is not None and cache.get_seq_length() > 0:
                raise ValueError("spatten.patch: this KV cache was filled outside the patch (or by another "
                                 "sequence); start from an empty cache")
            self._start_sequence(batch, device)
        elif batch != self.pad.shape[0]:
            raise UnsupportedModelError(f"spatten.patch: the batch changed from {self.pad.shape[0]} to {batch} "
                                        "mid-sequence; only Cache.reorder_cache / batch_select_indices (beam "
                                        "search) may change rows of a sequence in progress")
        seen, total = self.total, self.total + length
        if mask is None:
            new_pad = torch.ones(batch, length, dtype=torch.bool, device=device)
        elif mask.dim() != 2:
            raise UnsupportedModelError(f"spatten.patch takes a 2D attention_mask [batch, length]; got a "
                                        f"{mask.dim()}D mask")
        elif mask.shape[-1] == total:
            new_pad = mask[:, seen:].bool()
        elif mask.shape[-1] == length:
            new_pad = mask.bool()
        else:
            raise ValueError(f"spatten.patch: attention_mask has {mask.shape[-1]} columns; expected {total} "
                             f"(every token so far) or {length} (the tokens of this call)")
        self.pad = torch.cat([self.pad, new_pad], dim=1)
        self.importance = torch.cat([self.importance, torch.zeros(batch, length, device=device)], dim=1)
        self.exposure = torch.cat([self.exposure, torch.zeros(batch, length, device=device)], dim=1)
        alive = torch.full((batch, length), self.spec.layers, dtype=torch.int64, device=device)
        self.evicted_at = torch.cat([self.evicted_at, alive], dim=1)
        self.query_slots = torch.arange(seen, total, device=device)
        self.total = total
        self._per_forward_counts()
        self.decoding = seen > 0 and length == 1
        if self.decoding:
            eviction.between_steps(self)  # importance_decay
        self.prunes_inside = eviction.prunes_inside_forward(self, length)  # prefill_pruning "inside" or "after"
        eviction.check_positions(self, continuing, forward_argument(module, args, kwargs, "position_ids"))
        if self.decoding:
            self.recorder.begin("generate", self.generate_steps)
        else:
            self.recorder.begin("summarize", self.summarize_steps)
        self._start_heads(batch, device, keep_importance=True)
        self._layer_cache = None

    def _warn_if_regenerating(self, batch: int, length: int, use_cache) -> None:
        """generate(use_cache=False) calls the model on the whole text again for every new token."""
        previous, self._uncached_call = self._uncached_call, (batch, length)
        if use_cache is False and previous == (batch, length - 1) and not self.config.is_noop:
            warnings.warn("spatten.patch: generate(use_cache=False) runs the whole text again for every new token, "
                          "so cascade pruning starts over at each step (prefill pruning of the full text) instead "
                          "of evicting from the KV cache as SpAtten does; generate with use_cache=True",
                          UserWarning, stacklevel=2)

    def _start_sequence(self, batch: int, device: torch.device) -> None:
        self.reset()
        self.pad = torch.zeros(batch, 0, dtype=torch.bool, device=device)
        self.importance = torch.zeros(batch, 0, device=device)
        self.exposure = torch.zeros(batch, 0, device=device)  # importance_norm "mean": who could see each slot
        self.evicted_at = torch.zeros(batch, 0, dtype=torch.int64, device=device)
        self.head_importance = None

    def _finish(self, module, args, output):
        if not self.prunes_inside:
            eviction.prune_cache_after_prefill(self, self._evict)
        self.recorder.finish()
        if self.decoding:
            self.generate_steps += 1
        else:
            self.summarize_steps += 1
        self.last_kept_positions = [s.masked_fill(~live, -1) for s, live in zip(self.kslots, self.kvalid)
                                    if s is not None]

    def _attention_pre_hook(self, layer: int):
        def hook(module, args, kwargs):
            cache = forward_argument(module, args, kwargs, *_CACHE_NAMES)
            self._layer_cache = cache
            if layer == 0 and cache is not None:
                if self._cache_ref is None or self._cache_ref() is not cache:
                    _follow_row_selection(cache, self)
                self._cache_ref = weakref.ref(cache)

        return hook

    def select_rows(self, rows: torch.Tensor) -> None:
        """The cache kept rows `rows` (int64 [B'], beam search): select the same rows of the pruning state."""
        if self.total == 0:
            return
        rows = rows.to(self.pad.device)
        self.pad, self.importance, self.exposure, self.evicted_at = (
            t.index_select(0, rows) for t in (self.pad, self.importance, self.exposure, self.evicted_at))
        self.kslots = [None if t is None else t.index_select(0, rows) for t in self.kslots]
        self.kvalid = [None if t is None else t.index_select(0, rows) for t in self.kvalid]
        self.physical = [None if t is None else t.index_select(0, rows) for t in self.physical]
        self.physical_slots = [None if t is None else t.index_select(0, rows) for t in self.physical_slots]
        self._per_forward_counts()
        if self.head_importance is not None:
            self.head_importance = self.head_importance.index_select(0, rows)

    def _per_forward_counts(self) -> None:
        """What every layer of a forward reads from the padding mask, computed once per forward (not per layer):
        real_seen int64 [B] real tokens seen; query_valid bool [B, Lq] the real tokens of this call."""
        self.real_seen = self.pad.sum(-1)
        self.query_valid = self.pad[:, self.query_slots]

    # ---- attention -------------------------------------------------------------------------------------------
    def attention(self, layer: int, module, q, k, v, scaling: float, dropout: float, kwargs: dict):
        batch, length = q.shape[0], q.shape[2]
        cache = self._layer_cache
        new_slots = self.query_slots.expand(batch, length)
        previous = self.kslots[layer] if cache is not None else None
        live = torch.ones_like(new_slots, dtype=torch.bool)
        kslot = new_slots if previous is None else torch.cat([previous, new_slots], dim=1)
        live = live if previous is None else torch.cat([self.kvalid[layer], live], dim=1)
        sliding_window = kwargs.get("sliding_window")
        physical = self._extend_physical(layer, previous, new_slots, k.shape[2])
        if physical is not None:
            pass  # the cache holds evicted entries not yet compacted away: kslot indexes it through `physical`
        elif kslot.shape[1] > k.shape[2]:
            # a sliding-window cache layer dropped its oldest entries
            kslot, live = kslot[:, -k.shape[2]:], live[:, -k.shape[2]:]
        elif kslot.shape[1] < k.shape[2]:
            raise RuntimeError(f"layer {layer}: the KV cache holds {k.shape[2]} tokens but spatten tracked "
                               f"{kslot.shape[1]}; was the cache changed outside the patch?")
        valid = self.pad.gather(1, kslot) & live
        # With prefill_pruning "after" a forward does not evict; layer 0 may from the first decode step on
        # (token_unpruned_min=0).
        if self.config.prunes_tokens and (layer > 0 or self.decoding) and self.prunes_inside:
            valid &= self.evicted_at.gather(1, kslot) >= layer  # cascade: gone at an earlier layer = gone here
            self._defer = self._may_defer(cache, layer, sliding_window)
            kslot, valid, k, v = self._evict(layer, kslot, valid, k, v, cache)
            self._defer = False
        elif physical is not None:
            kslot, valid, k, v = self._compact(layer, kslot, valid, k, v, cache, physical)
        if cache is not None:
            self.kslots[layer], self.kvalid[layer] = kslot, valid
        physical = self.physical[layer] if cache is not None else None
        if physical is not None:
            # Attend over the cache as it lies: the entries evicted but not yet compacted away are masked.
            kslot, valid = self.physical_slots[layer], torch.zeros(
                batch, k.shape[2], dtype=torch.bool, device=valid.device).scatter_(1, physical, valid)
        mask, is_causal = self._mask(kslot, valid, length, sliding_window)
        return self.attend_layer(layer, q, k, v, kslot=kslot, key_valid=valid,
                                 query_valid=self.query_valid, kv_len=self.real_seen, mask=mask,
                                 is_causal=is_causal, scaling=scaling, dropout=dropout)

    def _evict(self, layer: int, kslot, valid, k, v, cache):
        """Row b keeps its top ⌊T_b·keep(layer)⌋ alive slots by importance (T_b = its real tokens seen);
        write the shortened K/V back to the cache."""
        counts = keep_counts(self.real_seen, self.token_ratios[layer])
        alive = valid.sum(-1)
        if bool((counts >= alive).all()) and bool(valid.all()):
            return kslot, valid, k, v
        # The score and the never-evicted slots (new token, sinks, recent window) are the eviction policy's.
        kept, kept_valid = select_per_row(eviction.scores(self, kslot), valid, counts,
                                          eviction.protected(self, kslot, valid))
        dropped = valid & ~torch.zeros_like(valid).scatter(1, kept, kept_valid)
        self.evicted_at.scatter_(1, kslot, torch.where(dropped, layer, self.evicted_at.gather(1, kslot)))
        self.recorder.note_topk(layer - 1, "token", kept_valid.sum(-1).cpu().numpy())  # per row
        physical = self.physical[layer]
        if physical is None:
            if self._defer:  # the cache is compact: entry i is kslot[:, i]
                self.physical_slots[layer] = kslot
                physical = torch.arange(kslot.shape[1], device=kslot.device).expand_as(kslot)
            else:
                k, v = select_entries(k, kept), select_entries(v, kept)
                self._store(cache, layer, k, v)
                return kslot.gather(1, kept), kept_valid, k, v
        self.physical[layer] = physical.gather(1, kept)
        return self._compact(layer, kslot.gather(1, kept), kept_valid, k, v, cache, self.physical[layer])

    # ---- deferred compaction -----------------------------------------------------------------------------------
    compact_slack = 1 / 32
    """Evicted entries a layer's cache may hold before they are compacted away, as a fraction of its kept entries
    (0 = rewrite the cache at every eviction). Rewriting the cache costs a copy of all its K/V; a decode step at
    KV keep 0.3 evicts about one entry per layer, so with 614 kept entries (2k context) the cache is rewritten
    every ~27 steps instead of ~7 in 10, at the price of holding and attending (masked) at most 1/32 more
    entries. The kept set is the same either way; a short cache (< 32 kept) is still rewritten every step."""

    def _may_defer(self, cache, layer: int, sliding_window) -> bool:
        """Deferral changes only the layout of the cache, so only where nothing reads that layout: a cached
        inference forward without K/V quantization (its groups run along the tokens), local value pruning
        (ties ordered by position), returned probabilities (their columns are the kept keys) or sliding windows."""
        config = self.config
        return (cache is not None and self.compact_slack > 0 and not torch.is_grad_enabled()
                and not getattr(cache_layer(cache, layer), "is_sliding", False)
                and not self.output_attentions and sliding_window is None and config.k_bits is None
                and config.v_bits is None and not config.prunes_values)

    def _extend_physical(self, layer: int, previous, new_slots: torch.Tensor, cached: int) -> torch.Tensor | None:
        """Append this call's entries (the last ones of the cache) to the layer's physical index, if it has one."""
        physical = self.physical[layer] if previous is not None else None
        if physical is None:
            self.physical[layer] = self.physical_slots[layer] = None
            return None
        length = new_slots.shape[1]
        if cached != self.physical_slots[layer].shape[1] + length:
            raise RuntimeError(f"layer {layer}: the KV cache holds {cached} entries but spatten tracked "
                               f"{self.physical_slots[layer].shape[1] + length}; was the cache changed outside the "
                               "patch (or is it a sliding-window cache)?")
        appended = torch.arange(cached - length, cached, device=physical.device).expand(physical.shape[0], length)
        self.physical[layer] = torch.cat([physical, appended], dim=1)
        self.physical_slots[layer] = torch.cat([self.physical_slots[layer], new_slots], dim=1)
        return self.physical[layer]

    def _compact(self, layer: int, kslot, valid, k, v, cache, physical: torch.Tensor):
        """Rewrite the cache to its kept entries once its dead ones outnumber `compact_slack` of them (or when
        deferral is off for this forward); the logical state kslot, valid [B, Lk] is unchanged either way."""
        if self._defer and k.shape[2] - physical.shape[1] <= physical.shape[1] * self.compact_slack:
            return kslot, valid, k, v
        k, v = select_entries(k, physical), select_entries(v, physical)
        self._store(cache, layer, k, v)
        self.physical[layer] = self.physical_slots[layer] = None
        return kslot, valid, k, v

    @staticmethod
    def _store(cache, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        if cache is not None:
            storage = cache_layer(cache, layer)
            storage.keys, storage.values = k, v

    def _mask(self, kslot, valid, length: int, sliding_window: int | None):
        """Bool mask [B, 1, Lq, Lk] (or None plus is_causal) from slots: causal, padding, sliding window."""
        plain = sliding_window is None and bool(valid.all())
        if plain and length == 1:
            return None, False  # one new token sees every kept (earlier) slot
        if plain and length == kslot.shape[1] and self.total == length:
            return None, True  # a fresh prompt, nothing evicted: plain causal attention
        queries = self.query_slots[None, None, :, None]
        keys = kslot[:, None, None, :]
        mask = valid[:, None, None, :] & (keys <= queries)
        if sliding_window is not None:
            mask &= queries - keys < sliding_window
        return mask, False


def _follow_row_selection(cache, runner: DecoderRunner) -> None:
    """Make `cache` tell `runner` when beam search reorders or selects its rows, so the per-row pruning state
    (importance, slots, padding, evictions, head importance) moves with the K/V rows.

    The cache's own methods are wrapped on the instance (the class is untouched); the wrappers hold the runner
    and the cache weakly and do nothing once the runner has moved on to another cache.
    """
    runner_ref, cache_ref = weakref.ref(runner), weakref.ref(cache)

    def follow(name: str, rows_of):
        original = getattr(type(cache), name, None)  # unbound: the wrapper must not keep the cache alive
        if original is None or getattr(getattr(cache, name), "_spatten_follows", False):
            return

        def wrapper(arg):
            original(cache_ref(), arg)
            current = runner_ref()
            if current is not None and current._cache_ref is not None and current._cache_ref() is cache_ref():
                current.select_rows(rows_of(arg, current))

        wrapper._spatten_follows = True
        setattr(cache, name, wrapper)

    follow("reorder_cache", lambda beam_idx, _: beam_idx)
    follow("batch_select_indices", lambda indices, _: indices)
    follow("batch_repeat_interleave",
           lambda repeats, current: torch.arange(current.pad.shape[0]).repeat_interleave(repeats))
