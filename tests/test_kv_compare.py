"""The kvpress comparison harness: its dense row is the unpatched model, its KV measurement and replayed traces
match hand-computed cases, and presses (when kvpress is installed) are held at the asked budget."""

import warnings

import numpy as np
import pytest
import torch

from spatten.config import SpAttenConfig
from spatten.eval import kv_compare as kc
from spatten.patch.compat import describe
from spatten.testing import tiny_model

PROTOCOL = kc.Protocol(prompt=24, scored=8, greedy=8, passages=2)


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("llama", layers=3, heads=4)
    gen = torch.Generator().manual_seed(0)
    texts = [torch.randint(3, 101, (PROTOCOL.passage_length,), generator=gen).tolist() for _ in range(2)]
    return model, texts, kc.reference(model, texts, PROTOCOL), describe(model).meta()


def test_dense_row_is_the_unpatched_model(setup):
    model, texts, ref, meta = setup
    row = kc.evaluate(model, kc.dense_method(), texts, PROTOCOL, ref, meta, simulate=False)
    nll = 0.0
    with torch.no_grad():
        for ids in texts:  # one causal forward over the whole passage, no cache
            logits = model(input_ids=torch.tensor([ids])).logits[0, PROTOCOL.prompt - 1:-1]
            nll += float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[PROTOCOL.prompt:]),
                                                           reduction="sum"))
    assert row["perplexity"] == pytest.approx(np.exp(nll / (2 * PROTOCOL.scored)), rel=1e-5)
    assert row["greedy_agreement"] == 1.0 and row["top1_vs_dense"] == 1.0 and row["kl_vs_dense"] < 1e-8
    assert row["kv_prefill"] == 1.0 and row["kv_decode"] == 1.0


@pytest.mark.parametrize("kv_keep", [0.7, 0.5, 0.3])
def test_for_generation_holds_its_budget_in_the_trace(kv_keep):
    """Mean KV fraction over layers and decode steps, from the patch's own trace, is at most kv_keep + 0.02."""
    import spatten

    model = tiny_model("llama", layers=4, heads=4)
    prompt = torch.randint(3, 101, (1, 40), generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        with spatten.patch(model, SpAttenConfig.for_generation(kv_keep)) as handle:
            model.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    rows = handle.trace.rows
    decode = rows[rows["stage"] == "generate"]
    assert decode["step"].nunique() >= 10
    per_layer = (decode["keys_fetched"] / decode["kv_len"]).groupby(decode["layer"]).mean()
    assert per_layer.mean() <= kv_keep + 0.02
    assert per_layer.mean() >= kv_keep - 0.1  # and the budget is used


def test_spatten_row_measures_the_kv_it_holds(setup):
    model, texts, ref, meta = setup
    cfg = SpAttenConfig.for_generation(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = kc.evaluate(model, kc.spatten_method("gen", cfg, 0.5), texts, PROTOCOL, ref, meta, simulate=True)
    ratios = cfg.schedule.keep_ratios(3, 0.5, "token")
    expected_prefill = np.mean([int(PROTOCOL.prompt * r + 1e-9) for r in ratios]) / PROTOCOL.prompt
    assert row["kv_prefill"] == pytest.approx(expected_prefill)
    assert row["kv_decode"] <= 0.52
    assert row["hw_dram_reduction_vs_dense"] > 1.2  # the simulator saw the shorter cache
    assert row["perplexity"] > 1.0


@pytest.mark.parametrize("slack", [None, 1 / 32])
def test_spatten_session_cache_is_exactly_the_kept_set(slack):
    """The measured cache holds no evicted entries, whatever the patch's decode-speed compaction slack."""
    model = tiny_model("llama", layers=3, heads=4)
    ids = torch.randint(3, 101, (230,), generator=torch.Generator().manual_seed(2)).tolist()
    method = kc.spatten_method("gen", SpAttenConfig.for_generation(0.5), 0.5)
    with warnings.catch_warnings(), method.session(model) as handle:
        warnings.simplefilter("ignore")
        if slack is not None:
            with pytest.raises(ValueError, match="compact_slack"):
                handle.compact_slack = -1
            handle.compact_slack = slack  # what a decode-speed run uses: lingering entries
        run = kc.run_sequence(model, ids, prompt=200, steps=30, greedy=False)
        kept = [int((positions >= 0).sum()) for positions in handle.last_kept_positions]
    assert min(kept) >= 64  # long enough for the slack to defer compaction
    if slack is None:
        assert run.decode_cache[-1] == kept
    else:
        assert any(cache != kept_now for cache, kept_now in zip(run.decode_cache[-1], kept))


def test_replayed_trace_counts_the_keys_a_press_attended():
    run = kc.Run(logits=[], tokens=[], prefill_cache=[10, 10], decode_cache=[[11, 5], [11, 6]], seen=[11, 12])
    meta = dict(family="llama", layers=2, heads=2, kv_heads=1, d_model=8, d_head=4, d_ff=16)
    rows = kc.replay_trace(run, meta, 10, kc.dense_method()).rows
    assert len(rows) == 3 * 2 * 2  # prefill + 2 steps, 2 layers, 2 heads
    decode = rows[rows["stage"] == "generate"].set_index(["step", "layer", "head"])
    assert decode.loc[(0, 1, 0), "keys_fetched"] == 11  # 10 cached + the new token
    assert decode.loc[(1, 1, 0), "keys_fetched"] == 6  # 5 kept after step 0 + the new token
    assert decode.loc[(0, 1, 1), "topk_kind"] == "token" and decode.loc[(0, 1, 1), "topk_k"] == 5
    assert decode.loc[(0, 0, 1), "topk_kind"] == "none"  # layer 0 did not shrink
    assert (decode["kv_len"].loc[1] == 12).all()


@pytest.mark.parametrize("decode", [True, False])
def test_kvpress_presses_hold_the_asked_budget(setup, decode):
    pytest.importorskip("kvpress")
    model, texts, ref, meta = setup
    row = kc.evaluate(model, kc.kvpress_method("random", 0.5, decode=decode), texts, PROTOCOL, ref, meta,
                      simulate=False)
    assert row["kv_prefill"] == pytest.approx(0.5)
    if decode:
        assert 0.45 <= row["kv_decode"] <= 0.5
    else:  # the new tokens pile up uncompressed
        assert row["kv_decode"] == pytest.approx(np.mean([(12 + s) / (24 + s) for s in range(1, 8)]))


def test_protocol_rejects_bad_sizes():
    with pytest.raises(ValueError, match="Protocol.prompt"):
        kc.Protocol(prompt=0)
