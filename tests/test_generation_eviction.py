"""Generation-stage eviction options (sink tokens, recent window, importance normalisation and decay, pruning
inside or after the prefill) against an independent reference: the unpatched Llama run layer by layer in plain
torch, recomputing the whole sequence every step with per-layer masks that encode the evictions."""

import math

import pytest
import torch

import spatten
from spatten.config import PruningSchedule, SpAttenConfig
from spatten.eval.lm import _cache_kw, _returned_cache
from spatten.testing import random_batch, tiny_model

LAYERS, HEADS, PROMPT, STEPS = 4, 4, 16, 6


def reference_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Ascending positions of the k largest, ties to the lower position (stable sort)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


def run_layer(block, rotary, hidden, allowed, positions):
    """One unpatched Llama layer with a bool mask [Lq, Lk]; returns (hidden, probabilities [H, Lq, Lk])."""
    captured = {}
    hook = block.self_attn.register_forward_hook(lambda m, a, out: captured.update(p=out[1]))
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    try:
        hidden = block(hidden, attention_mask=additive[None, None], position_ids=positions,
                       position_embeddings=rotary(hidden, position_ids=positions))
    finally:
        hook.remove()
    return hidden, captured["p"][0]


def reference_generation(model, prompt, cfg, steps):
    """Greedy decoding under `cfg` with the eviction policy written out; returns kept slots per step and layer."""
    base = model.model
    blocks = list(base.layers)
    ratios = cfg.schedule.keep_ratios(LAYERS, cfg.token_keep, "token")
    total = prompt.shape[1] + steps
    allowed = torch.zeros(LAYERS, total, total, dtype=torch.bool)
    stored = torch.zeros(LAYERS, total, dtype=torch.bool)
    evicted_at = torch.full((total,), LAYERS)
    importance, exposure = torch.zeros(total), torch.zeros(total)
    tokens, kept = prompt, []

    def evict(layer, length, decoding):
        candidates = stored[layer] & (evicted_at >= layer)
        keep = min(max(1, math.floor(length * ratios[layer] + 1e-9)), int(candidates.sum()))
        if keep >= int(stored[layer].sum()):
            return
        scores = importance.clone()
        if cfg.importance_norm == "mean":
            scores = scores / exposure.clamp_min(1.0)
        slots = torch.arange(total)
        protect = (slots < cfg.sink_tokens) | ((slots >= length - cfg.recent_window) & (slots < length))
        if decoding:
            protect |= slots == length - 1
        scores = scores.masked_fill(protect, math.inf).masked_fill(~candidates, -math.inf)
        chosen = torch.zeros(total, dtype=torch.bool)
        chosen[reference_topk(scores, keep)] = True
        evicted_at[candidates & ~chosen] = layer
        stored[layer] = chosen

    for step in range(steps + 1):
        length, decoding = tokens.shape[1], step > 0
        new = torch.arange(length - 1 if decoding else 0, length)
        inside = decoding or cfg.prefill_pruning == "inside"
        if decoding and cfg.importance_norm != "last":
            importance *= cfg.importance_decay
            exposure *= cfg.importance_decay
        positions = torch.arange(length)[None]
        hidden = base.embed_tokens(tokens)
        for layer, block in enumerate(blocks):
            stored[layer, new] = True
            if inside and (layer > 0 or decoding):  # layer 0 has no importance before the first step
                evict(layer, length, decoding)
            allowed[layer, new] = stored[layer][None, :] & (torch.arange(total)[None, :] <= new[:, None])
            hidden, probs = run_layer(block, base.rotary_emb, hidden, allowed[layer, :length, :length], positions)
            rows = new[-1:] if cfg.importance_norm == "last" else new
            received = probs[:, rows].sum((0, 1))  # [length]
            if cfg.importance_norm == "last":
                keys = stored[layer, :length].clone()
                importance[:length][keys] = received[keys]
            else:
                importance[:length] += received
                exposure[:length] += HEADS * allowed[layer, rows, :length].sum(0)
        if not inside:
            for layer in range(LAYERS):
                evict(layer, length, decoding)
        kept.append([stored[layer, :length].nonzero()[:, 0] for layer in range(LAYERS)])
        logits = model.lm_head(base.norm(hidden)[:, -1])
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return kept


def patched_generation(model, prompt, cfg, steps):
    kept = []
    with torch.no_grad(), spatten.patch(model, cfg) as handle:
        out = model(input_ids=prompt, use_cache=True)
        for step in range(steps + 1):
            if step > 0:
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                out = model(input_ids=token, use_cache=True, position_ids=torch.tensor([[prompt.shape[1] + step - 1]]),
                            **{_cache_kw(model): _returned_cache(out)})
            kept.append([slots[0] for slots in handle.last_kept_positions])
    return kept


BASE = dict(token_keep=0.4, schedule=PruningSchedule(ramp="constant"))
OPTIONS = {
    "sink": dict(sink_tokens=3, importance_norm="last"),
    "recent": dict(recent_window=5),
    "mean": dict(importance_norm="mean"),
    "last": dict(importance_norm="last"),
    "decay": dict(importance_decay=0.1),
    "after": dict(prefill_pruning="after"),
    "layer0": dict(schedule=PruningSchedule(ramp="constant", token_unpruned_fraction=0.0, token_unpruned_min=0)),
    "layer0-after": dict(schedule=PruningSchedule(ramp="budget", token_unpruned_fraction=0.0, token_unpruned_min=0),
                         prefill_pruning="after", importance_norm="mean"),
    "all": dict(sink_tokens=2, recent_window=4, importance_norm="mean", importance_decay=0.5,
                prefill_pruning="after"),
}
# Settings an option is compared against to show it changes what is kept (default: the paper's).
CONTEXT = {"sink": dict(importance_norm="last"), "layer0-after": dict(prefill_pruning="after", importance_norm="mean")}


@pytest.fixture(scope="module")
def llama():
    model = tiny_model("llama", layers=LAYERS, heads=HEADS)
    prompt, _ = random_batch(model, batch=1, length=PROMPT)
    return model, prompt


@pytest.mark.filterwarnings("ignore::spatten.patch.eviction.SpAttenCausalityWarning")
@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_keeps_what_the_reference_keeps(llama, option):
    model, prompt = llama
    cfg = SpAttenConfig(**{**BASE, **OPTIONS[option]})
    with torch.no_grad():
        expected = reference_generation(model, prompt, cfg, STEPS)
        default = reference_generation(model, prompt, SpAttenConfig(**{**BASE, **CONTEXT.get(option, {})}), STEPS)
    got = patched_generation(model, prompt, cfg, STEPS)
    for step in range(STEPS + 1):
        for layer in range(LAYERS):
            assert torch.equal(got[step][layer], expected[step][layer]), f"step {step}, layer {layer}"
    # the option changes what is kept (so the comparison above is not the default run twice)
    assert any(not torch.equal(a, b) for s, t in zip(expected, default) for a, b in zip(s, t))


def test_windows_are_never_evicted(llama):
    model, prompt = llama
    cfg = SpAttenConfig(**BASE, sink_tokens=2, recent_window=3)
    got = patched_generation(model, prompt, cfg, STEPS)
    for step, layers in enumerate(got):
        length = PROMPT + step
        must = {0, 1, length - 3, length - 2, length - 1}
        for slots in layers:
            assert must <= set(slots.tolist())


@pytest.mark.filterwarnings("ignore::spatten.patch.eviction.SpAttenCausalityWarning")
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_keep_one_with_any_option_is_the_unpatched_model(option, family):
    model = tiny_model(family, layers=3, heads=4)
    ids, mask = random_batch(model, batch=2, length=10, pad=3)
    cfg = SpAttenConfig(**OPTIONS[option])
    with torch.no_grad():
        dense = model(input_ids=ids, attention_mask=mask).logits
        with spatten.patch(model, cfg):
            patched = model(input_ids=ids, attention_mask=mask).logits
            steps = model.generate(ids[:1], max_new_tokens=4, do_sample=False)
        reference = model.generate(ids[:1], max_new_tokens=4, do_sample=False)
    valid = mask.bool()
    torch.testing.assert_close(patched[valid], dense[valid], atol=1e-5, rtol=0)
    assert torch.equal(steps, reference)


def test_budget_ramp_holds_the_mean_over_layers():
    schedule = PruningSchedule(ramp="budget", token_unpruned_fraction=0.0)
    ratios = schedule.keep_ratios(5, 0.5, "token")
    assert ratios[0] == 1.0 and ratios[1:] == [0.375] * 4
    assert sum(ratios) / 5 == pytest.approx(0.5)
    assert schedule.keep_ratios(4, 0.4, "token")[1:] == pytest.approx([0.2] * 3)
    assert schedule.keep_ratios(4, 0.1, "token")[1:] == [0.0] * 3  # budget below layer 0 alone: one token


@pytest.mark.filterwarnings("ignore::spatten.patch.eviction.SpAttenCausalityWarning")
def test_layer0_eviction_needs_explicit_positions(llama):
    model, prompt = llama
    cfg = SpAttenConfig(token_keep=0.4, prefill_pruning="after",
                        schedule=PruningSchedule(ramp="budget", token_unpruned_fraction=0.0, token_unpruned_min=0))
    with torch.no_grad(), spatten.patch(model, cfg):
        out = model(input_ids=prompt, use_cache=True)
        step = dict(input_ids=prompt[:, -1:], use_cache=True, **{_cache_kw(model): _returned_cache(out)})
        with pytest.raises(ValueError, match="pass position_ids"):
            model(**step)
        model(**step, position_ids=torch.tensor([[PROMPT]]))  # fine with positions
        generated = model.generate(prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert generated.shape[1] == PROMPT + 3
