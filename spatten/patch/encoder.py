"""Encoders (BERT, RoBERTa, BERT-architecture checkpoints): cascade token pruning that shortens the hidden
states entering each later layer, so Q/K/V projections, attention and FFN all run on the kept tokens.

Hooks: a pre-hook on the base model starts a forward (reads the 2D padding mask); a pre-hook on every layer
gathers the hidden states down to the top-k tokens by accumulated importance ([CLS] at position 0 always kept,
padding dropped first, kept tokens in original order); a hook on the encoder scatters its output back to full
length (pruned positions keep their state from when they were pruned), so the pooler and token-level heads work.
"""

from __future__ import annotations

import torch

from spatten.patch.compat import UnsupportedModelError, batch_and_length, forward_argument
from spatten.patch.runner import Runner, eager, keep_counts, select_per_row


class EncoderRunner(Runner):
    def install(self) -> list:
        spec = self.spec
        hooks = [spec.base.register_forward_pre_hook(eager(self._begin), with_kwargs=True),
                 spec.base.register_forward_hook(eager(self._finish)),
                 spec.encoder.register_forward_hook(eager(self._restore_length))]
        for layer, block in enumerate(spec.blocks):
            hooks.append(block.register_forward_pre_hook(eager(self._layer_hook(layer)), with_kwargs=True))
        # Importance is only needed up to the last layer that prunes.
        prunes = [l for l in range(1, spec.layers) if self.token_ratios[l] < self.token_ratios[l - 1]]
        self._last_pruning_layer = max(prunes, default=0)
        return hooks

    def reset(self) -> None:
        self.last_kept_positions = []

    def needs_importance(self, layer: int) -> bool:
        return layer < self._last_pruning_layer

    # ---- hooks -----------------------------------------------------------------------------------------------
    def _begin(self, module, args, kwargs):
        batch, length, device = batch_and_length(args, kwargs)
        self._read_forward_options(module, args, kwargs)
        mask = forward_argument(module, args, kwargs, "attention_mask")
        if mask is not None and mask.dim() != 2:
            raise UnsupportedModelError(f"spatten.patch takes a 2D attention_mask [batch, length]; got a "
                                        f"{mask.dim()}D mask")
        self.valid = (mask.bool() if mask is not None
                      else torch.ones(batch, length, dtype=torch.bool, device=device))
        self.real_length = self.valid.sum(-1)
        self.positions = torch.arange(length, device=device).expand(batch, length)
        self.length = length
        self.importance = torch.zeros(batch, length, device=device)
        self.full_hidden = None
        self.last_kept_positions = []
        self._start_heads(batch, device)
        self.recorder.begin("summarize", 0)

    def _finish(self, module, args, output):
        self.recorder.finish()

    def _layer_hook(self, layer: int):
        def hook(module, args, kwargs):
            args = self._prune_tokens(layer, args)
            if "attention_mask" in kwargs:
                kwargs["attention_mask"] = None
            self.last_kept_positions.append(self.positions.masked_fill(~self.valid, -1))
            return args, kwargs

        return hook

    def _prune_tokens(self, layer: int, args: tuple) -> tuple:
        if not self.config.prunes_tokens or layer == 0:
            return args
        # Each row keeps ⌊real length · keep(layer)⌋ of its own tokens, whatever the batch's padded length.
        counts = keep_counts(self.real_length, self.token_ratios[layer])
        if bool((counts >= self.valid.sum(-1)).all()):
            return args
        hidden = args[0]
        protect = torch.zeros_like(self.valid)
        protect[:, 0] = True  # [CLS] / <s>: the pooler and classification heads read position 0
        kept, kept_valid = select_per_row(self.importance.gather(1, self.positions), self.valid, counts, protect)
        width = hidden.shape[-1]
        positions = self.positions[..., None].expand(-1, -1, width)
        if self.full_hidden is None:
            self.full_hidden = hidden  # first pruning: every position is still present
        else:
            self.full_hidden = self.full_hidden.scatter(1, positions, hidden)  # out of place: autograd
        hidden = hidden.gather(1, kept[..., None].expand(-1, -1, width))
        self.positions = self.positions.gather(1, kept)
        self.valid = kept_valid
        self.recorder.note_topk(layer - 1, "token", kept_valid.sum(-1).cpu().numpy())  # per row
        # The layer mask is None (no mask function is registered for "spatten"): the attention builds its own.
        return (hidden, *(None for _ in args[1:2]), *args[2:])

    def _restore_length(self, module, args, output):
        if self.full_hidden is None:
            return output
        last = output["last_hidden_state"]
        full = self.full_hidden.scatter(1, self.positions[..., None].expand(-1, -1, last.shape[-1]), last)
        output["last_hidden_state"] = full
        return output

    # ---- attention -------------------------------------------------------------------------------------------
    def attention(self, layer: int, module, q, k, v, scaling: float, dropout: float, kwargs: dict):
        if q.shape[2] != self.positions.shape[1]:
            raise RuntimeError(f"layer {layer}: attention sees {q.shape[2]} tokens, spatten kept "
                               f"{self.positions.shape[1]}; the encoder loop is not the one spatten hooks")
        all_valid = bool(self.valid.all())
        mask = None if all_valid else self.valid[:, None, None, :]
        return self.attend_layer(layer, q, k, v, kslot=self.positions, key_valid=self.valid, query_valid=self.valid,
                                 kv_len=self.real_length, mask=mask, is_causal=False, scaling=scaling,
                                 dropout=dropout)
