"""spatten.patch: equivalence at ratio 0, life cycle, errors, and the method x family matrix."""

import math

import pytest
import torch
from torch import nn

import spatten
from spatten.config import SpAttenConfig
from spatten.eval.lm import _cache_kw
from spatten.patch import UnsupportedModelError, kernels
from spatten.testing import DECODER_FAMILIES, ENCODER_FAMILIES, FAMILIES, random_batch, tiny_model
from spatten.trace import Trace


def _real_rows(model, logits, mask):
    """Logits of real tokens only (padding rows of decoders are garbage in the reference as well)."""
    if model.config.model_type in DECODER_FAMILIES:
        return logits[mask.bool()]
    return logits


@pytest.mark.parametrize("family", FAMILIES)
def test_noop_config_reproduces_forward(family):
    model = tiny_model(family)
    ids, mask = random_batch(model, pad=3)
    expected = model(input_ids=ids, attention_mask=mask).logits
    with spatten.patch(model, SpAttenConfig()) as handle:
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(_real_rows(model, got, mask), _real_rows(model, expected, mask), atol=1e-5, rtol=0)
    assert len(handle.trace) == 2 * model.config.num_hidden_layers * model.config.num_attention_heads


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_noop_config_reproduces_generate(family):
    model = tiny_model(family)
    ids, mask = random_batch(model, pad=2)
    kwargs = dict(attention_mask=mask, max_new_tokens=5, do_sample=False, output_scores=True,
                  return_dict_in_generate=True, pad_token_id=0)
    expected = model.generate(ids, **kwargs)
    with spatten.patch(model, SpAttenConfig()) as handle:
        got = model.generate(ids, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    for step_got, step_expected in zip(got.scores, expected.scores):
        torch.testing.assert_close(step_got, step_expected, atol=1e-5, rtol=0)
    stages = handle.trace.rows.groupby("stage")["step"].nunique().to_dict()
    assert stages == {"summarize": 1, "generate": 4}  # prompt, then the 4 decode forwards after the first token


def test_patch_and_remove_leave_the_model_bit_identical():
    model = tiny_model("llama")
    ids, mask = random_batch(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expected = model(input_ids=ids, attention_mask=mask).logits
    hook_count = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    handle = spatten.patch(model, SpAttenConfig.paper())
    assert model.config._attn_implementation == "spatten"
    model(input_ids=ids, attention_mask=mask)
    handle.remove()
    handle.remove()  # idempotent
    assert model.config._attn_implementation == "eager"
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) == hook_count
    from transformers import AttentionInterface

    assert "spatten" not in AttentionInterface._global_mapping
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, expected)


def test_patching_twice_is_an_error_and_repatching_after_remove_works():
    model = tiny_model("gpt2")
    with spatten.patch(model, SpAttenConfig(token_keep=0.5)):
        with pytest.raises(RuntimeError, match="already patched"):
            spatten.patch(model, SpAttenConfig())
    with spatten.patch(model, SpAttenConfig()) as handle:
        model(input_ids=random_batch(model)[0])
    assert len(handle.trace) > 0


def test_unsupported_models_raise_naming_them():
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2))
    with pytest.raises(UnsupportedModelError, match="'t5'"):
        spatten.patch(t5, SpAttenConfig())
    with pytest.raises(UnsupportedModelError, match="Linear"):
        spatten.patch(nn.Linear(2, 2), SpAttenConfig())
    with pytest.raises(TypeError, match="SpAttenConfig"):
        spatten.patch(tiny_model("bert"), {"token_keep": 0.5})


def test_unsupported_inputs_raise_clear_errors():
    model = tiny_model("gpt2")
    ids, _ = random_batch(model)
    with spatten.patch(model, SpAttenConfig(token_keep=0.5)):
        with pytest.raises(UnsupportedModelError, match="2D attention_mask"):
            model(input_ids=ids, attention_mask=torch.ones(2, 1, 12, 12))
        with pytest.raises(ValueError, match="attention_mask has 5 columns"):
            model(input_ids=ids, attention_mask=torch.ones(2, 5))
    prefilled = model(input_ids=ids, use_cache=True).past_key_values
    with spatten.patch(model, SpAttenConfig(token_keep=0.5)):
        with pytest.raises(ValueError, match="filled outside the patch"):
            model(input_ids=ids[:, :1], **{_cache_kw(model): prefilled})  # 5.2: past_key_values


def test_compiled_ops_are_the_ones_used():
    missing = [name for name in kernels.OP_NAMES if kernels.backend(name) != "compiled"]
    assert not missing, f"C++ ops not built: the patch falls back to spatten.ops_ref for {missing}"
    assert kernels.op("topk_indices") is spatten.ops.topk_indices


METHODS = {
    "token": SpAttenConfig(token_keep=0.5),
    "head": SpAttenConfig(head_keep=0.5),
    "value": SpAttenConfig(value_keep=0.5),
    "quant": SpAttenConfig(k_bits=(4, 4), v_bits=8, refetch_threshold=0.3),
    "all": SpAttenConfig(token_keep=0.5, head_keep=0.5, value_keep=0.5, k_bits=(4, 4), v_bits=8,
                         refetch_threshold=0.3),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_on_every_family(method, family):
    cfg = METHODS[method]
    model = tiny_model(family)
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    ids, mask = random_batch(model, pad=3)
    with spatten.patch(model, cfg) as handle:
        logits = model(input_ids=ids, attention_mask=mask).logits
        assert torch.isfinite(logits).all()
        if family in DECODER_FAMILIES:
            out = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=0)
            assert out.shape == (2, 15)
    rows = Trace.from_records(handle.trace.rows.to_dict("records"), handle.trace.meta).rows  # re-validates
    assert handle.trace.meta["family"] == family and handle.trace.meta["config"] == cfg.to_dict()
    assert len(rows) % (2 * layers * heads) == 0
    kept = rows[rows["head_kept"]]
    last = rows[rows["layer"] == layers - 1]
    length = 12
    # Heads: the last layer keeps floor(H * head_keep) heads of every sequence.
    groups = last.groupby(["stage", "step"])
    per_seq = groups.head_kept.sum() / (groups.size() / heads)
    assert (per_seq == max(1, math.floor(heads * cfg.head_keep))).all()
    # Tokens: prompt rows of the last layer fetch at most floor(n * token_keep) keys.
    prompt_last = kept[(kept["stage"] == "summarize") & (kept["layer"] == layers - 1)]
    assert (prompt_last["keys_fetched"] <= math.floor(length * cfg.token_keep)).all()
    if cfg.prunes_tokens:
        assert (prompt_last["keys_fetched"] < prompt_last["kv_len"]).any()
        assert (rows["topk_kind"] == "token").any()
    # Values: never more than the keys, fewer when pruned.
    assert (kept["values_fetched"] <= kept["keys_fetched"]).all()
    assert (kept["values_fetched"] < kept["keys_fetched"]).any() == cfg.prunes_values
    # Quantization: the bits and threshold the config asks for; refetched rows bounded by the query rows.
    assert set(rows["k_msb_bits"]) == {cfg.k_bits[0] if cfg.k_bits else -1}
    assert set(rows["v_bits"]) == {cfg.v_bits if cfg.v_bits else -1}
    assert (rows["lsb_refetch_rows"] <= rows["query_rows"]).all()
    assert (rows["lsb_refetch_rows"].sum() > 0) == (cfg.k_bits is not None)
    if family in DECODER_FAMILIES:
        decode = rows[rows["stage"] == "generate"]
        assert set(decode["step"]) == {0, 1} and (decode["query_rows"] == 1).all()
    stats = handle.stats
    assert list(stats["layer"]) == list(range(layers))
    assert stats["token_keep"].iloc[-1] < 1.0 if cfg.prunes_tokens else (stats["token_keep"] == 1.0).all()


def _gpt2_generation_trace(cfg):
    model = tiny_model("gpt2")
    ids, _ = random_batch(model, batch=1, length=20)
    with spatten.patch(model, cfg) as handle:
        model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    return handle.trace


def test_gpt2_generation_trace_exports_to_the_official_csv(tmp_path, workloads_dir):
    trace = _gpt2_generation_trace(SpAttenConfig(token_keep=0.5, value_keep=0.3, k_bits=(6, 4), v_bits=6,
                                                 refetch_threshold=0.05))
    decode = Trace(trace.rows[trace.rows["stage"] == "generate"], trace.meta)
    path = decode.to_official_csv(tmp_path / "patched.csv")
    official_header = (workloads_dir / "summary-gpt2-small-wikitext2-per8.csv").read_text().splitlines()[0]
    assert path.read_text().splitlines()[0] == official_header
    back = Trace.from_official_csv(path).rows
    for column in ("step", "layer", "head", "kv_len", "keys_fetched", "values_fetched", "k_msb_bits", "topk_k"):
        assert back[column].tolist() == decode.rows[column].tolist(), column
    assert (back["topk_kind"] == "token").any() and (back["keys_fetched"] < back["kv_len"]).any()


def test_trace_runs_through_the_simulator():
    from spatten import hwsim

    trace = _gpt2_generation_trace(SpAttenConfig(token_keep=0.5, k_bits=(6, 4)))
    report = hwsim.simulate(trace)
    assert report.to_dict()["cycles"] > 0


def test_fast_path_skips_importance_when_nothing_is_pruned(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("importance computed although no token pruning is configured")

    monkeypatch.setattr(kernels, "token_importance", forbidden)
    for family in ("bert", "llama"):
        model = tiny_model(family)
        with spatten.patch(model, SpAttenConfig(head_keep=0.5)):
            model(input_ids=random_batch(model)[0])
