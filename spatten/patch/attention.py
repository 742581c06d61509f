"""The attention function registered as "spatten" in transformers' AttentionInterface.

Patched attention modules are looked up in a weak map (module -> runner, layer), so nothing is stored on the
modules themselves and an unpatched module can never reach a stale runner. The function is excluded from
torch.compile (a graph break): traced, the lookup was resolved once and every layer ran as layer 0.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def bind(module: nn.Module, runner, layer: int) -> None:
    _ACTIVE[module] = (runner, layer)


def unbind(module: nn.Module) -> None:
    _ACTIVE.pop(module, None)


@torch.compiler.disable(recursive=True)
def spatten_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers attention-function signature: query [B, Hq, Lq, D], key/value [B, H_kv, Lk, D].

    Returns (attn_output [B, Lq, Hq, D], probs): probs is None unless the forward asked for
    output_attentions; then it is the probabilities that multiplied V, [B, Hq, Lq_l, Lk_l] over the tokens
    kept at this layer (see PatchHandle.last_kept_positions), zeros on pruned heads. attention_mask is ignored:
    the runner owns the mask.
    """
    entry = _ACTIVE.get(module)
    if entry is None:
        raise RuntimeError(f"{type(module).__name__} runs with attn_implementation='spatten' but is not patched by "
                           "spatten.patch (was the model copied while patched, or the config changed by hand?)")
    runner, layer = entry
    if scaling is None:
        scaling = getattr(module, "scaling", None) or query.shape[-1] ** -0.5
    return runner.attention(layer, module, query, key, value, scaling, dropout, kwargs)
