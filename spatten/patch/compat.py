"""What spatten needs to know about a Hugging Face model, found by looking at it (not at version strings).

`describe(model)` returns a ModelSpec (family, base model, blocks, attention modules, sizes) or raises
UnsupportedModelError naming what is missing. The rest of the patch touches transformers only through this
module: the attention registry and the KV-cache layers.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

ENCODER_TYPES = ("bert", "roberta")  # BERT-architecture checkpoints (MiniLM, ...) report model_type "bert"
DECODER_TYPES = ("gpt2", "llama", "mistral", "qwen2")
SUPPORTED_TYPES = ENCODER_TYPES + DECODER_TYPES
ATTN_NAME = "spatten"


class UnsupportedModelError(ValueError):
    """The model (or one of its features) cannot be patched; the message names it."""


@dataclass
class ModelSpec:
    """The parts of a model the patch hooks into.

    blocks[i] is transformer layer i; attentions[i] its self-attention module (the one that calls the
    attention function); base the model under the task head (BertModel, GPT2Model, LlamaModel, ...).
    """

    family: str
    kind: str  # "encoder" | "decoder"
    base: nn.Module
    blocks: list[nn.Module]
    attentions: list[nn.Module]
    encoder: nn.Module | None  # BertEncoder: its output is scattered back to full length
    heads: int
    kv_heads: int
    d_model: int
    d_head: int
    d_ff: int

    @property
    def layers(self) -> int:
        return len(self.blocks)

    def meta(self) -> dict[str, Any]:
        return dict(family=self.family, layers=self.layers, heads=self.heads, kv_heads=self.kv_heads,
                    d_model=self.d_model, d_head=self.d_head, d_ff=self.d_ff)


def describe(model: nn.Module) -> ModelSpec:
    """Find the family and the hook points of `model`, or raise UnsupportedModelError."""
    config = getattr(model, "config", None)
    if not isinstance(model, nn.Module) or config is None or not hasattr(config, "model_type"):
        raise UnsupportedModelError(
            f"spatten.patch needs a Hugging Face transformers model (PreTrainedModel with a config); got "
            f"{type(model).__name__}")
    family = config.model_type
    if family not in SUPPORTED_TYPES:
        raise UnsupportedModelError(
            f"model type {family!r} ({type(model).__name__}) is not supported by spatten.patch; supported: "
            f"{', '.join(SUPPORTED_TYPES)}")
    base = getattr(model, "base_model", model)
    if family in ENCODER_TYPES:
        spec = _describe_encoder(model, base, family)
    else:
        spec = _describe_decoder(model, base, family)
    for i, attn in enumerate(spec.attentions):
        if not _dispatches_through_interface(attn):
            raise UnsupportedModelError(
                f"{type(attn).__name__} (layer {i}) does not dispatch through transformers' AttentionInterface; "
                "this transformers version is not supported")
    return spec


def _describe_encoder(model: nn.Module, base: nn.Module, family: str) -> ModelSpec:
    config = model.config
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise UnsupportedModelError(f"{family} used as a decoder (is_decoder / add_cross_attention) is not "
                                    "supported; spatten patches BERT-style encoders")
    encoder = getattr(base, "encoder", None)
    blocks = list(getattr(encoder, "layer", []))
    if not blocks or not all(hasattr(b, "attention") and hasattr(b.attention, "self") and hasattr(b.attention, "output")
                             for b in blocks):
        raise UnsupportedModelError(f"{type(model).__name__}: expected base.encoder.layer[i].attention.self and "
                                    ".attention.output")
    heads = config.num_attention_heads
    return ModelSpec(family, "encoder", base, blocks, [b.attention.self for b in blocks], encoder, heads, heads,
                     config.hidden_size, config.hidden_size // heads, config.intermediate_size)


def _describe_decoder(model: nn.Module, base: nn.Module, family: str) -> ModelSpec:
    config = model.config
    if family == "gpt2":
        if getattr(config, "add_cross_attention", False):
            raise UnsupportedModelError("GPT-2 with cross-attention (add_cross_attention) is not supported")
        blocks = list(getattr(base, "h", []))
        attentions = [b.attn for b in blocks]
        heads = config.n_head
        d_ff = config.n_inner or 4 * config.n_embd
        kv_heads = heads
    else:
        blocks = list(getattr(base, "layers", []))
        attentions = [b.self_attn for b in blocks]
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        d_ff = config.intermediate_size
    if not blocks:
        raise UnsupportedModelError(f"{type(model).__name__}: found no transformer layers")
    d_model = config.hidden_size
    d_head = getattr(config, "head_dim", None) or d_model // heads
    return ModelSpec(family, "decoder", base, blocks, attentions, None, heads, kv_heads, d_model, d_head, d_ff)


def _dispatches_through_interface(attn: nn.Module) -> bool:
    try:
        source = inspect.getsource(inspect.unwrap(type(attn).forward))
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source


# ---- attention registry ------------------------------------------------------------------------------------
_registrations = 0


def register_attention(fn: Callable) -> None:
    """Register `fn` as attention implementation "spatten" (class-level, so every model file sees it).

    No mask function is registered on purpose: transformers then passes attention_mask=None, and the patch
    builds masks itself from the 2D padding mask and the positions it kept (cascade pruning changes lengths).
    """
    global _registrations
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, fn)
    _registrations += 1


def unregister_attention() -> None:
    """Undo one register_attention; the name disappears with the last patched model."""
    global _registrations
    from transformers import AttentionInterface

    _registrations = max(0, _registrations - 1)
    if _registrations == 0:
        AttentionInterface._global_mapping.pop(ATTN_NAME, None)


# ---- KV cache ------------------------------------------------------------------------------------------------
def cache_layer(cache: Any, layer: int):
    """The per-layer storage (with .keys / .values [B, H_kv, L, D]) of a transformers Cache, or raise."""
    from transformers.cache_utils import DynamicLayer

    self_cache = getattr(cache, "self_attention_cache", cache)
    layers = getattr(self_cache, "layers", None)
    if layers is None:
        raise UnsupportedModelError(f"KV cache {type(cache).__name__} has no per-layer storage (.layers); "
                                    "spatten evicts from transformers DynamicCache")
    storage = layers[layer]
    if not isinstance(storage, DynamicLayer):
        raise UnsupportedModelError(
            f"KV cache layer type {type(storage).__name__} cannot evict tokens; use the default DynamicCache "
            "(static and quantized caches are not supported)")
    return storage


def require_evictable_cache(cache: Any) -> None:
    """Raise UnsupportedModelError unless every layer of `cache` is one spatten can evict from (DynamicCache)."""
    self_cache = getattr(cache, "self_attention_cache", cache)
    for layer in range(len(getattr(self_cache, "layers", None) or [None])):
        cache_layer(cache, layer)


def batch_and_length(args: tuple, kwargs: dict) -> tuple[int, int, torch.device]:
    """Batch size, query length and device of a model forward call (input_ids or inputs_embeds)."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    if isinstance(ids, torch.Tensor):
        return ids.shape[0], ids.shape[-1], ids.device
    embeds = kwargs.get("inputs_embeds")
    if isinstance(embeds, torch.Tensor):
        return embeds.shape[0], embeds.shape[1], embeds.device
    raise ValueError("spatten.patch: the forward call has neither input_ids nor inputs_embeds")


@functools.cache
def _positional_names(cls: type) -> tuple[str, ...]:
    params = list(inspect.signature(inspect.unwrap(cls.forward)).parameters)
    return tuple(params[1:] if params and params[0] == "self" else params)


def forward_argument(module: nn.Module, args: tuple, kwargs: dict, *names: str) -> Any:
    """The value of a forward argument of `module` given positionally or by keyword (first of `names` found)."""
    for name in names:
        if name in kwargs:
            return kwargs[name]
    params = _positional_names(type(module))
    for name in names:
        if name in params and params.index(name) < len(args):
            return args[params.index(name)]
    return None
