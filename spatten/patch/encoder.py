"""Encoders (BERT, RoBERTa, BERT-architecture checkpoints): cascade token pruning that shortens the hidden
states, so every later Q/K/V projection, attention and FFN runs on the kept tokens only.

Where the tokens are dropped: inside layer l, right after its attention, the only point where every input of
the decision exists (the importance accumulated through layer l's attention probabilities). A token pruned there
is gone from layer l's output projection and FFN too: they act on each token alone, and a pruned token's output
would reach nothing but the placeholder below. The kept tokens' states are exactly those of dropping at the
entry of layer l + 1; LTP (the re-implementation of SpAtten's cascade pruner) runs the FFN after the pruning in
the same way ("FFN is computed after token pruning", kssteven418/LTP modeling_ltp.py).

Hooks: a pre-hook on the base model starts a forward (reads the 2D padding mask); a pre-hook on every layer
records the tokens it sees and drops the layer mask; a pre-hook on every layer's attention output module
(`attention.output`: output projection, residual, LayerNorm) gathers both its inputs down to the top-k tokens by
accumulated importance ([CLS] at position 0 always kept, padding dropped first, kept tokens in original order);
a hook on the encoder scatters its output back to full length, so the pooler and token-level heads work: a
pruned position holds the state that entered the layer that pruned it (the last state computed for it in full).
"""

from __future__ import annotations

import torch

from spatten.patch.compat import UnsupportedModelError, batch_and_length, forward_argument
from spatten.patch.runner import Runner, eager, keep_counts, select_entries, select_per_row


class EncoderRunner(Runner):
    def install(self) -> list:
        spec = self.spec
        hooks = [spec.base.register_forward_pre_hook(eager(self._begin), with_kwargs=True),
                 spec.base.register_forward_hook(eager(self._finish)),
                 spec.encoder.register_forward_hook(eager(self._restore_length))]
        for layer, block in enumerate(spec.blocks):
            hooks.append(block.register_forward_pre_hook(eager(self._layer_hook(layer)), with_kwargs=True))
            if self.config.prunes_tokens and layer + 1 < spec.layers:
                hooks.append(block.attention.output.register_forward_pre_hook(eager(self._drop_hook(layer + 1))))
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
            # The layer mask is None (no mask function is registered for "spatten"): the attention builds its own.
            if "attention_mask" in kwargs:
                kwargs["attention_mask"] = None
            args = (args[0], *(None for _ in args[1:2]), *args[2:])
            self.last_kept_positions.append(self.positions.masked_fill(~self.valid, -1))
            return args, kwargs

        return hook

    def _drop_hook(self, next_layer: int):
        def hook(module, args):
            attention_out, layer_input = args[:2]
            kept = self._choose_tokens(next_layer, layer_input)
            if kept is None:
                return None
            return (gather_tokens(attention_out, kept), gather_tokens(layer_input, kept), *args[2:])

        return hook

    def _choose_tokens(self, layer: int, layer_input: torch.Tensor) -> torch.Tensor | None:
        """The slots [B, W] of the current tokens that enter `layer` (None: all of them); updates the positions and
        records the dropped tokens' layer_input [B, L, d] as their final state."""
        # Each row keeps ⌊real length · keep(layer)⌋ of its own tokens, whatever the batch's padded length.
        counts = keep_counts(self.real_length, self.token_ratios[layer])
        if bool((counts >= self.valid.sum(-1)).all()):
            return None
        protect = torch.zeros_like(self.valid)
        protect[:, 0] = True  # [CLS] / <s>: the pooler and classification heads read position 0
        kept, kept_valid = select_per_row(self.importance.gather(1, self.positions), self.valid, counts, protect)
        dropped = self.valid & ~torch.zeros_like(self.valid).scatter(1, kept, kept_valid)
        self._write_states(layer_input, dropped)
        self.positions = self.positions.gather(1, kept)
        self.valid = kept_valid
        self.recorder.note_topk(layer - 1, "token", kept_valid.sum(-1).cpu().numpy())  # per row
        return kept

    def _write_states(self, hidden: torch.Tensor, slots: torch.Tensor) -> None:
        """Write the states hidden [B, W, d] of the current slots `slots` (bool [B, W]) at their positions of the
        full-length output. Each real position is written once: when it is dropped, or at the end. (Only real
        slots write: a row shorter than the batch's widest fills its width with positions it dropped earlier.)"""
        if self.full_hidden is None:
            # First pruning: every position is present, in order. A copy of our own, written in place from here.
            self.full_hidden = hidden.clone()
            return
        rows, cols = slots.nonzero(as_tuple=True)
        self.full_hidden.index_put_((rows, self.positions[rows, cols]), hidden[rows, cols])

    def _restore_length(self, module, args, output):
        if self.full_hidden is None:
            return output
        self._write_states(output["last_hidden_state"], self.valid)
        output["last_hidden_state"], self.full_hidden = self.full_hidden, None
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


def gather_tokens(hidden: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """hidden [B, L, d] -> [B, W, d]: row b's tokens kept[b] (int64 [B, W]), copied as whole d-vectors."""
    return select_entries(hidden[:, None], kept)[:, 0]
