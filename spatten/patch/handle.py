"""`spatten.patch(model, config)`: install SpAtten on a Hugging Face model and take it off again."""

from __future__ import annotations

import weakref

import pandas as pd
import torch
from torch import nn

from spatten.config import SpAttenConfig
from spatten.patch import attention, compat
from spatten.patch.decoder import DecoderRunner
from spatten.patch.encoder import EncoderRunner
from spatten.patch.recorder import TraceRecorder, layer_stats
from spatten.trace import Trace

_PATCHED: weakref.WeakKeyDictionary[nn.Module, PatchHandle] = weakref.WeakKeyDictionary()


class PatchHandle:
    """A patched model. Use as a context manager, or call `remove()`; both restore every hook and attribute.

    trace: the Trace of every forward since patching (or `reset()`); stats: per-layer summary (DataFrame);
    last_kept_positions: per layer, int64 [B, n_l] positions (encoders) or KV slots (decoders) that entered
    the layer in the last forward, -1 for padding.
    """

    def __init__(self, model: nn.Module, config: SpAttenConfig | None = None):
        config = SpAttenConfig() if config is None else config
        if not isinstance(config, SpAttenConfig):
            raise TypeError(f"spatten.patch: config must be a SpAttenConfig, got {type(config).__name__}")
        spec = compat.describe(model)
        if model in _PATCHED:
            raise RuntimeError(f"{type(model).__name__} is already patched by spatten; remove that patch first")
        self.model, self.config, self.spec = model, config, spec
        meta = {**spec.meta(), "config": config.to_dict()}
        self._recorder = TraceRecorder(meta, config)
        runner_cls = EncoderRunner if spec.kind == "encoder" else DecoderRunner
        self._runner = runner_cls(spec, config, self._recorder)
        compat.register_attention(attention.spatten_attention)
        configs = {id(c): c for c in [model.config, *(getattr(a, "config", None) for a in spec.attentions)] if c}
        self._saved_implementations = [(c, c._attn_implementation) for c in configs.values()]
        self._hooks = []
        try:
            for c in configs.values():
                c._attn_implementation = compat.ATTN_NAME
            self._hooks = self._runner.install()
            for layer, module in enumerate(spec.attentions):
                attention.bind(module, self._runner, layer)
        except Exception:
            self.remove()
            raise
        _PATCHED[model] = self
        self._removed = False

    # ---- life cycle ------------------------------------------------------------------------------------------
    def remove(self) -> None:
        """Take the patch off (idempotent)."""
        if getattr(self, "_removed", False):
            return
        for hook in self._hooks:
            hook.remove()
        for c, implementation in self._saved_implementations:
            c._attn_implementation = implementation
        for module in self.spec.attentions:
            attention.unbind(module)
        compat.unregister_attention()
        _PATCHED.pop(self.model, None)
        self._removed = True

    def __enter__(self) -> PatchHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def reset(self) -> None:
        """Forget the trace and any sequence state (the next forward starts a new sequence)."""
        self._recorder.reset()
        self._runner.reset()

    # ---- results ---------------------------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        return self._recorder.trace()

    @property
    def stats(self) -> pd.DataFrame:
        return layer_stats(self.trace)

    @property
    def last_kept_positions(self) -> list[torch.Tensor]:
        return list(self._runner.last_kept_positions)

    @property
    def compact_slack(self) -> float:
        """Decoders: evicted entries a layer's KV cache may still hold (masked) before it is rewritten, as a
        fraction of its kept ones (DecoderRunner.compact_slack: a decode-speed trade). 0 keeps the cache exactly
        the kept set after every step, as a measurement of the cache's size needs; the kept set is the same."""
        return getattr(self._runner, "compact_slack", 0.0)

    @compact_slack.setter
    def compact_slack(self, value: float) -> None:
        if not hasattr(self._runner, "compact_slack"):
            raise AttributeError("compact_slack applies to decoders (KV caches); this patch is on an encoder")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"compact_slack must be a number >= 0, got {value!r}")
        self._runner.compact_slack = float(value)

    def __repr__(self) -> str:
        state = "removed" if self._removed else "active"
        return f"PatchHandle({self.spec.family}, {self.spec.layers} layers, {state}, {self.config})"


def patch(model: nn.Module, config: SpAttenConfig | None = None) -> PatchHandle:
    """Apply SpAtten to `model` on the fly; returns a PatchHandle (also a context manager).

    >>> with spatten.patch(model, spatten.SpAttenConfig(token_keep=0.5)) as handle:
    ...     model(**inputs)
    >>> handle.stats
    """
    return PatchHandle(model, config)
