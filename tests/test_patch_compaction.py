"""Deferred cache compaction (decode speed): a layer's cache keeps evicted entries, masked, until more than
`DecoderRunner.compact_slack` (a fraction of the kept entries) pile up. Judged against the every-step rewrite (compact_slack = 0) in the
same process: the same kept slots at every step and layer, the same trace rows, and the same logits up to
float summation order (the masked entries add exact zeros, in a different order)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import spatten
from spatten.config import PruningSchedule, SpAttenConfig
from spatten.eval.lm import _cache_kw, _returned_cache
from spatten.patch.decoder import DecoderRunner, select_entries
from spatten.testing import random_batch, tiny_model

STEPS = 14


def decode(model, cfg, ids, mask, slack: float, monkeypatch):
    """Greedy decode STEPS tokens through the cache; returns (logits per step, kept slots per step, trace rows,
    whether some step ran with evictions not yet compacted)."""
    monkeypatch.setattr(DecoderRunner, "compact_slack", slack)
    logits, kept, deferred = [], [], False
    with torch.no_grad(), spatten.patch(model, cfg) as handle:
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        position = mask.long().sum(-1, keepdim=True)
        for _ in range(STEPS):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(input_ids=token, attention_mask=mask, position_ids=position, use_cache=True,
                        **{_cache_kw(model): _returned_cache(out)})
            position = position + 1
            logits.append(out.logits[:, -1])
            kept.append(handle.last_kept_positions)
            deferred |= any(p is not None for p in handle._runner.physical)
        rows = handle.trace.rows
    return logits, kept, rows, deferred


CASES = {
    "gpt2 keep 0.3": ("gpt2", dict(token_keep=0.3)),
    "gpt2 keep 0.5, padded rows": ("gpt2", dict(token_keep=0.5)),
    "llama gqa, mean, sinks, recent": ("llama", dict(token_keep=0.4, importance_norm="mean", sink_tokens=2,
                                                     recent_window=3, schedule=PruningSchedule(ramp="constant"))),
    "llama, last, decay, heads": ("llama", dict(token_keep=0.4, importance_norm="last", head_keep=0.75)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("slack", [0.1, 0.6])
def test_deferred_compaction_keeps_the_same_slots_and_outputs(name, slack, monkeypatch):
    family, options = CASES[name]
    model = tiny_model(family, layers=4, heads=4, hidden=32, attn_implementation="sdpa")
    ids, mask = random_batch(model, lengths=[24, 19, 24] if "padded" in name else [24, 24])
    cfg = SpAttenConfig(**options)
    every_step = decode(model, cfg, ids, mask, 0, monkeypatch)
    deferred = decode(model, cfg, ids, mask, slack, monkeypatch)
    assert deferred[3] and not every_step[3]  # the deferral ran, and slack 0 is the every-step rewrite
    for step, (a, b) in enumerate(zip(every_step[1], deferred[1])):
        assert len(a) == len(b)
        for layer, (x, y) in enumerate(zip(a, b)):
            assert torch.equal(x, y), f"step {step}, layer {layer}"
    for a, b in zip(every_step[0], deferred[0]):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    pd.testing.assert_frame_equal(deferred[2], every_step[2])
    assert (every_step[1][-1][-1] >= 0).sum() < mask.sum() + STEPS  # something was evicted


def test_select_entries_is_the_per_row_gather():
    x = torch.randn(3, 2, 7, 5)
    kept = torch.tensor([[0, 2, 6], [1, 3, 4], [0, 1, 2]])
    expected = x.gather(2, kept[:, None, :, None].expand(-1, 2, -1, 5))
    assert torch.equal(select_entries(x, kept), expected)
    assert torch.equal(select_entries(x.transpose(0, 1).contiguous().transpose(0, 1), kept), expected)
