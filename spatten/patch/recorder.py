"""Turns what each attention call did into spatten.trace rows, and summarises them per layer.

Rows: one per (stage, step, layer, head) and per sequence of the batch (the sequences of a batch follow one
another, each ordered layer -> head, as the official workload files are). Counts stay tensors until the end of
a forward, so recording costs one host copy per forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from spatten.config import SpAttenConfig
from spatten.trace import COLUMNS, Trace


@dataclass
class LayerRecord:
    """What one layer did in one forward; tensors are per sequence b (and head h).

    query_rows, kv_len, keys_fetched: int64 [B]; head_kept: bool [B, H];
    values_fetched, refetch_rows: int64 [B, H] (values_fetched of a pruned head is 0).
    """

    layer: int
    query_rows: torch.Tensor
    kv_len: torch.Tensor
    keys_fetched: torch.Tensor
    head_kept: torch.Tensor
    values_fetched: torch.Tensor
    refetch_rows: torch.Tensor
    accumulate_importance: bool
    topk: dict[str, int] = field(default_factory=dict)  # cascade top-k run after this layer: kind -> k


class TraceRecorder:
    """Collects LayerRecords of the running forward and the finished rows of all earlier ones."""

    def __init__(self, meta: dict[str, Any], config: SpAttenConfig):
        self.meta = meta
        self.config = config
        # One dict of column arrays per forward; the DataFrame is built only when the trace is read, since a
        # DataFrame per decode step cost ~14 ms, more than the step's attention.
        self._blocks: list[dict[str, np.ndarray]] = []
        self._pending: list[LayerRecord] = []
        self._stage = "summarize"
        self._step = 0

    def begin(self, stage: str, step: int) -> None:
        self._pending = []  # a forward that raised leaves half a record behind
        self._stage, self._step = stage, step

    def add(self, record: LayerRecord) -> None:
        self._pending.append(record)

    def note_topk(self, layer: int, kind: str, k: int) -> None:
        """A top-k of `kind` ("token" or "head") keeping k entries ran between `layer` and the next layer."""
        for record in self._pending:
            if record.layer == layer:
                record.topk[kind] = k

    def finish(self) -> None:
        if self._pending:
            self._blocks.append(self._rows(self._pending))
        self._pending = []

    def reset(self) -> None:
        self._blocks, self._pending = [], []

    # ---- outputs -------------------------------------------------------------------------------------------
    def trace(self) -> Trace:
        if not self._blocks:
            return Trace(meta=self.meta)
        columns = {c.name: np.concatenate([block[c.name] for block in self._blocks]) for c in COLUMNS}
        return Trace.from_columns(columns, self.meta)

    def _rows(self, records: list[LayerRecord]) -> dict[str, np.ndarray]:
        """The trace columns of one forward, each a flat array in (batch, layer, head) order."""
        records = sorted(records, key=lambda r: r.layer)
        n_layers = len(records)
        batch, heads = records[0].head_kept.shape

        def stack(name: str, per_head: bool) -> np.ndarray:  # -> [B, n_layers, H]
            values = torch.stack([getattr(r, name) for r in records], dim=1).cpu().numpy()
            return values if per_head else np.repeat(values[:, :, None], heads, axis=2)

        head_kept = stack("head_kept", True)
        cols: dict[str, Any] = {
            "layer": np.broadcast_to(np.array([r.layer for r in records])[None, :, None], head_kept.shape),
            "head": np.broadcast_to(np.arange(heads)[None, None, :], head_kept.shape),
            "head_kept": head_kept,
            "sequence": np.broadcast_to(np.arange(batch)[:, None, None], head_kept.shape),
            "query_rows": stack("query_rows", False),
            "kv_len": stack("kv_len", False),
            "keys_fetched": np.where(head_kept, stack("keys_fetched", False), 0),
            "values_fetched": stack("values_fetched", True),
            "lsb_refetch_rows": stack("refetch_rows", True),
            "accumulate_importance": np.broadcast_to(
                np.array([r.accumulate_importance for r in records])[None, :, None], head_kept.shape),
        }
        topk_kind = np.full(head_kept.shape, "none", dtype=object)
        topk_k = np.full(head_kept.shape, -1, dtype=np.int64)
        for i, record in enumerate(records):
            # The top-k runs after the layer's last head; a head top-k goes one row earlier when both ran
            # (a row holds one event; with a single head the token event wins).
            slots = [heads - 1, heads - 2]
            for kind in ("token", "head"):
                if kind in record.topk and slots and slots[0] >= 0:
                    topk_kind[:, i, slots[0]] = kind
                    topk_k[:, i, slots[0]] = record.topk[kind]
                    slots.pop(0)
        cols["topk_kind"], cols["topk_k"] = topk_kind, topk_k
        columns = {name: np.ascontiguousarray(value).reshape(-1) for name, value in cols.items()}
        k_bits, v_bits = self.config.k_bits, self.config.v_bits
        constants = {
            "stage": self._stage,
            "step": self._step,
            "d_head": self.meta["d_head"],
            "k_msb_bits": k_bits[0] if k_bits else -1,
            "k_lsb_bits": k_bits[1] if k_bits else -1,
            "q_bits": -1,
            "v_bits": v_bits if v_bits is not None else -1,
            "threshold": self.config.refetch_threshold if k_bits else -1.0,
            "rescale_importance": False,
        }
        rows = head_kept.size
        columns.update({name: np.full(rows, value, dtype=object if isinstance(value, str) else None)
                        for name, value in constants.items()})
        return columns


def layer_stats(trace: Trace) -> pd.DataFrame:
    """Per layer: mean KV length, kept tokens / heads / values and the LSB refetch rate.

    token_keep = keys fetched / KV length; head_keep = fraction of heads kept; value_keep = V rows fetched /
    K rows fetched; refetch_rate = refetched query rows / query rows (NaN without K quantization).
    """
    rows = trace.rows
    columns = ["layer", "kv_len", "keys_fetched", "token_keep", "head_keep", "values_fetched", "value_keep",
               "refetch_rate"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    kept = rows[rows["head_kept"]]
    by_layer = kept.groupby("layer")
    stats = pd.DataFrame({
        "kv_len": by_layer["kv_len"].mean(),
        "keys_fetched": by_layer["keys_fetched"].mean(),
        "token_keep": by_layer["keys_fetched"].sum() / by_layer["kv_len"].sum(),
        "values_fetched": by_layer["values_fetched"].mean(),
        "value_keep": by_layer["values_fetched"].sum() / by_layer["keys_fetched"].sum(),
    })
    stats["head_keep"] = rows.groupby("layer")["head_kept"].mean()
    quantized = kept["threshold"] >= 0
    refetch = kept[quantized].groupby("layer")
    stats["refetch_rate"] = refetch["lsb_refetch_rows"].sum() / refetch["query_rows"].sum()
    return stats.reset_index()[columns]
