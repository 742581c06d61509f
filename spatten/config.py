"""SpAttenConfig: what to prune and quantize, and on which layers (the pruning schedule).

The defaults prune nothing and quantize nothing, so `spatten.patch(model, SpAttenConfig())` reproduces the
unpatched model; the paper's settings are documented field by field and collected in `SpAttenConfig.paper()`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

RAMPS = ("linear", "constant", "budget")
QUANT_GROUPS = ("token", "head")
IMPORTANCE_NORMS = ("sum", "mean", "last")
PREFILL_PRUNING = ("inside", "after")


@dataclass(frozen=True)
class PruningSchedule:
    """Which layers prune, and how the keep ratio moves from 1.0 to its final value over the layers.

    The paper leaves the first 15% of layers unpruned for tokens (the LTP re-implementation: at least 3) and the
    first 30% for heads, then raises the pruning ratio linearly so that the last layer reaches the final ratio.

    token_unpruned_fraction: fraction of layers (rounded up) that see every token. Paper: 0.15.
    token_unpruned_min: at least this many unpruned layers for tokens. LTP: 3; default 1 (layer 0 needs an
        attention map before any importance exists). 0 lets a decoder's layer 0 evict too, from the first decode
        step on (and after a prefill with prefill_pruning "after"); encoders never prune layer 0. The cache
        then no longer counts the tokens seen: continuing forwards must pass position_ids (generate() does).
    head_unpruned_fraction / head_unpruned_min: the same for heads. Paper: 0.30.
    ramp: "linear" (the paper), "constant" (the final keep ratio on every pruned layer) or "budget" (one keep
        ratio on every pruned layer, chosen so that the *mean over all layers*, unpruned ones included, equals the
        final keep ratio: what a KV-cache budget means; when the unpruned layers alone exceed the budget the pruned
        ones keep a single token).
    """

    token_unpruned_fraction: float = 0.15
    token_unpruned_min: int = 1
    head_unpruned_fraction: float = 0.30
    head_unpruned_min: int = 1
    ramp: str = "linear"

    def __post_init__(self) -> None:
        for name in ("token_unpruned_fraction", "head_unpruned_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"schedule.{name} must be a number in [0, 1], got {value!r}")
        for name, least in (("token_unpruned_min", 0), ("head_unpruned_min", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"schedule.{name} must be an integer >= {least}, got {value!r}")
        if self.ramp not in RAMPS:
            raise ValueError(f"schedule.ramp must be one of {RAMPS}, got {self.ramp!r}")

    def first_pruned_layer(self, num_layers: int, kind: str) -> int:
        """Index of the first layer that prunes `kind` ("token" or "head"); num_layers when none does."""
        fraction, minimum = (
            (self.token_unpruned_fraction, self.token_unpruned_min) if kind == "token"
            else (self.head_unpruned_fraction, self.head_unpruned_min)
        )
        return min(num_layers, max(minimum, math.ceil(fraction * num_layers - 1e-9)))

    def keep_ratios(self, num_layers: int, final_keep: float, kind: str) -> list[float]:
        """Keep ratio per layer: the fraction of the original tokens (heads) that enter each layer.

        Layers before `first_pruned_layer` keep 1.0; the last layer keeps `final_keep`.
        """
        start = self.first_pruned_layer(num_layers, kind)
        ratios = []
        for layer in range(num_layers):
            if layer < start or final_keep >= 1.0:
                ratios.append(1.0)
            elif self.ramp == "constant":
                ratios.append(final_keep)
            elif self.ramp == "budget":
                pruned = num_layers - start
                ratios.append(max(0.0, (num_layers * final_keep - start) / pruned))  # 0 keeps one token
            else:
                progress = (layer - start + 1) / (num_layers - start)
                ratios.append(1.0 - (1.0 - final_keep) * progress)
        return ratios


@dataclass(frozen=True)
class SpAttenConfig:
    """How SpAtten prunes and quantizes a model (validated; serialisable to JSON/YAML).

    token_keep: fraction of tokens kept at the last layer (cascade token pruning; encoders shorten the hidden
        states, decoders evict them from the KV cache). 1.0 = off. Paper: 0.1-0.5 depending on the task.
    head_keep: fraction of heads kept at the last layer (cascade head pruning). 1.0 = off. Paper: ~0.9.
    value_keep: per query row, fraction of V rows fetched (local value pruning: the top probabilities only).
        1.0 = off. Paper: 0.2 of the kept keys.
    k_bits: (msb, lsb) bits of K for progressive quantization, or None for full precision. Paper: (6, 4) or (8, 4).
    v_bits: bits of V (static quantization), or None. Paper: 6 or 8.
    refetch_threshold: rows whose max attention probability (from the MSBs) is below this fetch the LSBs.
        Paper: 0.1; the official traces: 0.05. 0 never refetches; > 1 always does.
    quant_group: quantization scale per "token" (one per K/V row; default, stable while a KV cache grows) or
        per "head".
    schedule: which layers prune, see PruningSchedule.

    Generation-stage settings (decoders only; docs/generation.md has the evidence and the measurements). With the
    defaults the decoder prunes as the paper describes: accumulated attention, no windows, pruning in the prefill.
    sink_tokens: the first n real tokens of a sequence are never evicted (attention sinks; the original release's
        `start_size`). Default 0. They count inside the keep budget.
    recent_window: the last n real tokens are never evicted (the original release's `recent_size`). Default 0 (the
        token being generated is still kept at its own step). They count inside the keep budget.
    importance_norm: the score a KV slot is evicted by. "sum": attention probability summed over heads, query rows,
        layers and steps (the paper; default). "mean": that sum divided by how many (query row, head) pairs could
        attend to the slot, so late tokens are not handicapped by having been seen less (H2O / kvpress
        ObservedAttentionPress). "last": the attention the newest query row gave the slot in the latest layer that
        saw it, summed over heads, not accumulated (TOVA).
    importance_decay: factor in (0, 1] applied to the accumulated importance between two decode steps (the
        official traces' `if_rescale_previous_importance`, raised once per step after the last layer; the factor
        itself is not in the release). 1.0 = no rescaling (default). No effect with importance_norm "last".
    prefill_pruning: "inside" (default, the paper): a prefill forward evicts between its own layers, so its
        queries attend to pruned keys and eviction is decided with attention from later tokens of the prompt.
        "after": the prefill attends densely and accumulates importance; its KV cache is pruned when it ends,
        before the first decode step (what KV-cache compression methods such as kvpress do).
    """

    token_keep: float = 1.0
    head_keep: float = 1.0
    value_keep: float = 1.0
    k_bits: tuple[int, int] | None = None
    v_bits: int | None = None
    refetch_threshold: float = 0.1
    quant_group: str = "token"
    schedule: PruningSchedule = field(default_factory=PruningSchedule)
    sink_tokens: int = 0
    recent_window: int = 0
    importance_norm: str = "sum"
    importance_decay: float = 1.0
    prefill_pruning: str = "inside"

    def __post_init__(self) -> None:
        for name in ("token_keep", "head_keep", "value_keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.k_bits is not None:
            bits = self.k_bits
            if (not isinstance(bits, (tuple, list)) or len(bits) != 2
                    or not all(isinstance(b, int) and not isinstance(b, bool) for b in bits)):
                raise ValueError(f"k_bits must be None or a pair of integers (msb, lsb), got {bits!r}")
            msb, lsb = bits
            if msb < 1 or lsb < 0 or not 2 <= msb + lsb <= 16:
                raise ValueError(f"k_bits must satisfy msb >= 1, lsb >= 0 and 2 <= msb + lsb <= 16, got {bits!r}")
            object.__setattr__(self, "k_bits", (msb, lsb))
        if self.v_bits is not None and (isinstance(self.v_bits, bool) or not isinstance(self.v_bits, int)
                                        or not 2 <= self.v_bits <= 16):
            raise ValueError(f"v_bits must be None or an integer in [2, 16], got {self.v_bits!r}")
        value = self.refetch_threshold
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
            raise ValueError(f"refetch_threshold must be a finite number >= 0, got {value!r}")
        object.__setattr__(self, "refetch_threshold", float(value))
        if self.quant_group not in QUANT_GROUPS:
            raise ValueError(f"quant_group must be one of {QUANT_GROUPS}, got {self.quant_group!r}")
        for name in ("sink_tokens", "recent_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.importance_norm not in IMPORTANCE_NORMS:
            raise ValueError(f"importance_norm must be one of {IMPORTANCE_NORMS}, got {self.importance_norm!r}")
        value = self.importance_decay
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
            raise ValueError(f"importance_decay must be a number in (0, 1], got {value!r}")
        object.__setattr__(self, "importance_decay", float(value))
        if self.prefill_pruning not in PREFILL_PRUNING:
            raise ValueError(f"prefill_pruning must be one of {PREFILL_PRUNING}, got {self.prefill_pruning!r}")
        if isinstance(self.schedule, Mapping):
            object.__setattr__(self, "schedule", _build(PruningSchedule, self.schedule, "schedule."))
        elif not isinstance(self.schedule, PruningSchedule):
            raise ValueError(f"schedule must be a PruningSchedule or a mapping, got {type(self.schedule).__name__}")

    # ---- what the config switches on -----------------------------------------------------------------
    @property
    def prunes_tokens(self) -> bool:
        return self.token_keep < 1.0

    @property
    def prunes_heads(self) -> bool:
        return self.head_keep < 1.0

    @property
    def prunes_values(self) -> bool:
        return self.value_keep < 1.0

    @property
    def quantizes(self) -> bool:
        return self.k_bits is not None or self.v_bits is not None

    @property
    def is_noop(self) -> bool:
        """True when the config changes nothing (the patched model equals the unpatched one)."""
        return not (self.prunes_tokens or self.prunes_heads or self.prunes_values or self.quantizes)

    @classmethod
    def paper(cls, **overrides: Any) -> SpAttenConfig:
        """The paper's GPT-2 setting (token keep 0.5, head keep 0.9, V keep 0.2, K 6+4 bits, V 6, τ = 0.1)."""
        settings: dict[str, Any] = dict(token_keep=0.5, head_keep=0.9, value_keep=0.2, k_bits=(6, 4), v_bits=6,
                                        refetch_threshold=0.1)
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def for_generation(cls, kv_keep: float, **overrides: Any) -> SpAttenConfig:
        """The recommended decoder setting for a KV-cache budget: mean KV fraction held (over layers and decode
        steps, as `handle.stats` measures it) at most kv_keep.

        Token pruning only, every layer (layer 0 included, token_unpruned_min=0) keeping kv_keep of the tokens
        seen, importance normalised per query ("mean"), the cache pruned after a dense prefill, 4 sink tokens,
        no recent window, no decay. Continuing forwards must pass position_ids (generate() does). Each choice was picked by measurement on
        stories260K (experiments/calibrate_generation.py; numbers in docs/generation.md), not guessed.
        """
        if isinstance(kv_keep, bool) or not isinstance(kv_keep, (int, float)) or not 0.0 < kv_keep <= 1.0:
            raise ValueError(f"kv_keep must be a number in (0, 1], got {kv_keep!r}")
        schedule = PruningSchedule(ramp="budget", token_unpruned_fraction=0.0, token_unpruned_min=0)
        settings: dict[str, Any] = dict(token_keep=kv_keep, schedule=schedule, **_GENERATION_DEFAULTS)
        settings.update(overrides)
        return cls(**settings)

    # ---- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["k_bits"] = list(self.k_bits) if self.k_bits is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpAttenConfig:
        """Inverse of to_dict; unknown keys raise ValueError naming them."""
        if not isinstance(data, Mapping):
            raise ValueError(f"SpAttenConfig.from_dict expects a mapping, got {type(data).__name__}")
        data = dict(data)
        if isinstance(data.get("k_bits"), list):
            data["k_bits"] = tuple(data["k_bits"])
        return _build(cls, data, "")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SpAttenConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"SpAttenConfig JSON is malformed: {err}") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    @classmethod
    def from_yaml(cls, text: str) -> SpAttenConfig:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"SpAttenConfig YAML is malformed: {err}") from None
        return cls.from_dict(data if data is not None else {})


# for_generation's choices (experiments/calibrate_generation.py, docs/generation.md).
_GENERATION_DEFAULTS: dict[str, Any] = dict(importance_norm="mean", prefill_pruning="after", sink_tokens=4,
                                            recent_window=0, importance_decay=1.0)


def _build(kind: type, data: Mapping[str, Any], prefix: str) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} field(s): {', '.join(prefix + u for u in unknown)}")
    return kind(**data)
