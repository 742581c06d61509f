"""The patch against independent references built from the unpatched eager model and plain PyTorch.

- tokens and heads: the unpatched model run layer by layer (encoders: on gathered hidden states; decoders:
  recomputing the whole sequence every step with per-layer masks that encode the evictions), importance summed
  from its eager attention probabilities, heads gated at the output projection, top-k by stable sort;
- values and progressive quantization: plain-torch attention functions registered under test names and run
  by the unpatched model.
"""

import math

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

import spatten
from spatten.config import SpAttenConfig
from spatten.testing import random_batch, tiny_model


def reference_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Ascending positions of the k largest, ties to the lower position (stable sort)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return torch.sort(order[..., :k], dim=-1).values


def additive(allowed: torch.Tensor) -> torch.Tensor:
    return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)


def output_projection(block):
    attn = getattr(block, "attention", None)
    if attn is not None:
        return attn.output.dense  # BERT / RoBERTa
    return block.attn.c_proj if hasattr(block, "attn") else block.self_attn.o_proj


def attention_module(block):
    if hasattr(block, "attention"):
        return block.attention.self
    return block.attn if hasattr(block, "attn") else block.self_attn


class HeadGate:
    """Pre-hook on the output projection: zero pruned heads (gate [B, Lq, H]) and sum |output| per head."""

    def __init__(self, heads: int):
        self.heads, self.gate, self.row_mask, self.abs_sum = heads, None, None, None

    def __call__(self, module, args):
        x = args[0]
        per_head = x.view(*x.shape[:2], self.heads, -1)
        if self.gate is not None:
            per_head = per_head * self.gate[..., None]
        self.abs_sum = (per_head.abs().sum(-1) * self.row_mask[..., None]).sum(1)  # [B, H]
        return (per_head.reshape(x.shape),)


def run_block(block, family, hidden, allowed, positions):
    """One unpatched layer with a bool mask [B, 1, Lq, Lk]; returns (hidden, attention probabilities)."""
    captured = {}

    def capture(module, args, output):
        captured["p"] = output[1]

    hook = attention_module(block).register_forward_hook(capture)
    try:
        if family in ("bert", "roberta"):
            hidden = block(hidden, additive(allowed))
        elif family == "gpt2":
            hidden = block(hidden, None, additive(allowed))
        else:
            hidden = block(hidden, attention_mask=additive(allowed), position_ids=positions,
                           position_embeddings=block._rotary(hidden, positions))
    finally:
        hook.remove()
    return hidden, captured["p"]


# ---- encoders ------------------------------------------------------------------------------------------------
def encoder_reference(model, ids, mask, cfg):
    """Returns (kept positions per layer, final hidden of the kept tokens, their positions, the full-length output
    [B, L, d]: each token's state as it entered the last layer that computed it in full, kept tokens' final state)."""
    base, family = model.base_model, model.config.model_type
    blocks, heads = list(base.encoder.layer), model.config.num_attention_heads
    layers, (batch, length) = len(blocks), ids.shape
    token_ratios = cfg.schedule.keep_ratios(layers, cfg.token_keep, "token")
    head_ratios = cfg.schedule.keep_ratios(layers, cfg.head_keep, "head")
    hidden = base.embeddings(input_ids=ids)
    positions, valid = torch.arange(length).expand(batch, length), mask.bool()
    importance, head_importance = torch.zeros(batch, length), torch.zeros(batch, heads)
    kept_log = []
    full = torch.zeros_like(hidden)
    for layer, block in enumerate(blocks):
        k = max(1, math.floor(length * token_ratios[layer] + 1e-9))
        if layer > 0 and k < positions.shape[1]:
            scores = importance.gather(1, positions).masked_fill(~valid, -math.inf)
            scores[:, 0] = math.inf
            idx = reference_topk(scores, k)
            hidden = hidden.gather(1, idx[..., None].expand(-1, -1, hidden.shape[-1]))
            positions, valid = positions.gather(1, idx), valid.gather(1, idx)
        kept_log.append(positions.masked_fill(~valid, -1))
        full = full.scatter(1, positions[..., None].expand_as(hidden), hidden)
        gate = HeadGate(heads)
        kh = max(1, math.floor(heads * head_ratios[layer] + 1e-9))
        if layer == 0:
            alive = torch.ones(batch, heads, dtype=torch.bool)
        if kh < int(alive[0].sum()):
            idx = reference_topk(head_importance.masked_fill(~alive, -math.inf), kh)
            alive = torch.zeros_like(alive).scatter_(1, idx, True)
        gate.gate, gate.row_mask = alive[:, None, :].float().expand(-1, positions.shape[1], -1), valid.float()
        handle = output_projection(block).register_forward_pre_hook(gate)
        hidden, probs = run_block(block, family, hidden, valid[:, None, None, :], None)
        handle.remove()
        probs = probs * alive[:, :, None, None] * valid[:, None, :, None] * valid[:, None, None, :]
        importance.scatter_add_(1, positions, probs.sum((1, 2)))
        head_importance += gate.abs_sum
    return kept_log, hidden, positions, full.scatter(1, positions[..., None].expand_as(hidden), hidden)


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("cfg", [SpAttenConfig(token_keep=0.4), SpAttenConfig(token_keep=0.5, head_keep=0.5)],
                         ids=["tokens", "tokens+heads"])
def test_encoder_keeps_the_reference_top_k(family, cfg):
    """A padded batch against the reference run on each row's real tokens: row b keeps ⌊len_b · keep⌋."""
    model = tiny_model(family, head="Model", layers=5, heads=4)
    ids, mask = random_batch(model, batch=3, length=16, pad=5)
    with torch.no_grad(), spatten.patch(model, cfg) as handle:
        out = model(input_ids=ids, attention_mask=mask)
    assert len(handle.last_kept_positions) == 5
    assert out.last_hidden_state.shape[1] == 16  # scattered back to full length
    for row in range(3):
        real = int(mask[row].sum())
        with torch.no_grad():
            kept, hidden, positions, full = encoder_reference(model, ids[row:row + 1, :real],
                                                              mask[row:row + 1, :real], cfg)
        for layer, (got, expected) in enumerate(zip(handle.last_kept_positions, kept)):
            assert torch.equal(got[row][got[row] >= 0], expected[0]), f"row {row}, layer {layer}"
        assert kept[-1].shape[1] < real
        final = out.last_hidden_state[row:row + 1].gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        torch.testing.assert_close(final, hidden, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.pooler_output[row:row + 1], model.base_model.pooler(hidden), atol=1e-5,
                                   rtol=0)
        # A pruned token holds the state that entered the layer that pruned it (its last state computed in full).
        torch.testing.assert_close(out.last_hidden_state[row:row + 1, :real], full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_encoder_drops_pruned_tokens_before_the_output_projection_and_ffn(family):
    """Layer l's attention sees the tokens that entered it; its output projection and FFN see only those that
    enter layer l + 1 (the pruning decided by layer l's attention): no work for a token that is then dropped."""
    model = tiny_model(family, head="Model", layers=5, heads=4)
    ids, mask = random_batch(model, batch=1, length=20)
    rows = {}

    def count(name, layer):
        def hook(module, args):
            rows[name, layer] = args[0].shape[1]
        return hook

    blocks = model.base_model.encoder.layer
    hooks = [h for layer, block in enumerate(blocks) for h in (
        block.attention.self.query.register_forward_pre_hook(count("query", layer)),
        block.attention.output.dense.register_forward_pre_hook(count("output", layer)),
        block.intermediate.dense.register_forward_pre_hook(count("ffn", layer)))]
    cfg = SpAttenConfig(token_keep=0.4)
    with torch.no_grad(), spatten.patch(model, cfg) as handle:
        model(input_ids=ids, attention_mask=mask)
    for h in hooks:
        h.remove()
    entering = [positions.shape[1] for positions in handle.last_kept_positions]
    assert entering == [max(1, math.floor(20 * r + 1e-9)) for r in cfg.schedule.keep_ratios(5, 0.4, "token")]
    assert entering[-1] < entering[0]
    for layer in range(5):
        assert rows["query", layer] == entering[layer]
        after = entering[layer + 1] if layer + 1 < 5 else entering[layer]
        assert rows["output", layer] == rows["ffn", layer] == after, f"layer {layer}"


# ---- decoders ------------------------------------------------------------------------------------------------
def decoder_reference(model, prompt, cfg, new_tokens):
    """Greedy generation, recomputing the whole sequence each step with per-layer, per-row allowed-key masks."""
    base, family = model.base_model, model.config.model_type
    blocks = list(base.h) if family == "gpt2" else list(base.layers)
    for block in blocks:
        block._rotary = lambda h, p: base.rotary_emb(h, position_ids=p)
    layers, heads = len(blocks), model.config.num_attention_heads
    token_ratios = cfg.schedule.keep_ratios(layers, cfg.token_keep, "token")
    head_ratios = cfg.schedule.keep_ratios(layers, cfg.head_keep, "head")
    total = prompt.shape[1] + new_tokens
    allowed = torch.zeros(layers, total, total, dtype=torch.bool)  # row i: keys query i saw at layer l
    gates = torch.ones(layers, total, heads)
    stored = [torch.zeros(total, dtype=torch.bool) for _ in range(layers)]
    evicted_at = torch.full((total,), layers)
    importance, head_importance = torch.zeros(total), torch.zeros(1, heads)
    tokens, kept_per_step, logits_per_step = prompt, [], []
    for step in range(new_tokens + 1):
        length = tokens.shape[1]
        new = torch.arange(0 if step == 0 else length - 1, length)
        decoding = step > 0
        positions = torch.arange(length)[None]
        hidden = base.wte(tokens) + base.wpe(positions) if family == "gpt2" else base.embed_tokens(tokens)
        alive_heads = torch.ones(1, heads, dtype=torch.bool)
        kept_now = []
        for layer, block in enumerate(blocks):
            stored[layer][new] = True
            candidates = stored[layer] & (evicted_at >= layer)
            keep = min(max(1, math.floor(length * token_ratios[layer] + 1e-9)), int(candidates.sum()))
            if layer > 0 and keep < int(stored[layer].sum()):
                scores = importance.masked_fill(~candidates, -math.inf)[:length]
                if decoding:
                    scores[length - 1] = math.inf
                chosen = torch.zeros(total, dtype=torch.bool)
                chosen[reference_topk(scores, keep)] = True
                evicted_at[candidates & ~chosen] = layer
                stored[layer] = chosen
            kept_now.append(stored[layer].nonzero()[:, 0])
            causal = torch.arange(total)[None, :] <= new[:, None]
            allowed[layer, new] = stored[layer][None, :] & causal
            kh = max(1, math.floor(heads * head_ratios[layer] + 1e-9))
            if kh < int(alive_heads.sum()):
                idx = reference_topk(head_importance.masked_fill(~alive_heads, -math.inf), kh)
                alive_heads = torch.zeros_like(alive_heads).scatter_(1, idx, True)
            gates[layer, new] = alive_heads.float()
            gate = HeadGate(heads)
            gate.gate = gates[layer, :length][None]
            gate.row_mask = torch.zeros(1, length)
            gate.row_mask[0, new] = 1.0
            handle = output_projection(block).register_forward_pre_hook(gate)
            hidden, probs = run_block(block, family, hidden, allowed[layer, :length, :length][None, None], positions)
            handle.remove()
            probs = probs[0, :, new] * gates[layer, new].T[:, :, None]  # [H, new, length]
            importance[:length] += probs.sum((0, 1))
            head_importance += gate.abs_sum
        kept_per_step.append(kept_now)
        final = base.ln_f(hidden) if family == "gpt2" else base.norm(hidden)
        logits = model.lm_head(final[:, -1])
        logits_per_step.append(logits)
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return kept_per_step, logits_per_step


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("cfg", [SpAttenConfig(token_keep=0.3), SpAttenConfig(token_keep=0.5, head_keep=0.5)],
                         ids=["tokens", "tokens+heads"])
def test_decoder_evicts_the_reference_top_k_in_prefill_and_decode(family, cfg):
    model = tiny_model(family, layers=4, heads=4)
    prompt, _ = random_batch(model, batch=1, length=14)
    steps = 4
    with torch.no_grad():
        kept, logits = decoder_reference(model, prompt, cfg, steps)
        with spatten.patch(model, cfg) as handle:
            out = model(input_ids=prompt, use_cache=True)
            for step in range(steps + 1):
                if step > 0:
                    out = model(input_ids=token, cache=out.past_key_values, use_cache=True)
                got = handle.last_kept_positions
                for layer in range(len(got)):
                    assert torch.equal(got[layer][0], kept[step][layer]), f"step {step}, layer {layer}"
                torch.testing.assert_close(out.logits[:, -1], logits[step], atol=1e-4, rtol=0)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
    assert len(kept[-1][-1]) < prompt.shape[1] + steps  # something was evicted
    reference_tokens = torch.stack([l.argmax(-1) for l in logits], dim=1)
    with torch.no_grad(), spatten.patch(model, cfg):
        generated = model.generate(prompt, max_new_tokens=steps + 1, do_sample=False)
    new = generated[:, prompt.shape[1]:]  # generate() stops early at EOS (id 2)
    assert new.shape[1] >= 2 and torch.equal(new, reference_tokens[:, :new.shape[1]])
    rows = handle.trace.rows
    decode = rows[(rows["stage"] == "generate") & rows["head_kept"]]
    # keys fetched per layer = the kept slots the reference attended to
    for step in range(steps):
        for layer in range(4):
            fetched = decode[(decode["step"] == step) & (decode["layer"] == layer)]["keys_fetched"]
            assert (fetched == len(kept[step + 1][layer])).all()


# ---- values and progressive quantization: plain-torch attention functions --------------------------------------
RECORDED: dict = {}


def _repeat(x, groups):
    return x.repeat_interleave(groups, dim=1)


def _quantize(x, bits):
    qmax = 2 ** (bits - 1) - 1
    peak = x.abs().amax(-1, keepdim=True)
    scale = torch.where(peak > 0, peak / qmax, torch.ones_like(peak))
    return torch.clamp(torch.round(x / scale), -qmax, qmax), scale


def reference_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    cfg = RECORDED["config"]
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat(key, groups), _repeat(value, groups)
    if cfg.v_bits:
        q_v, scale_v = _quantize(value, cfg.v_bits)
        value = q_v * scale_v

    def probs_of(keys):
        logits = (query @ keys.transpose(-1, -2)) * scaling
        if attention_mask is not None:
            logits = logits + attention_mask
        return torch.softmax(logits, dim=-1)

    refetch = None
    if cfg.k_bits:
        msb_bits, lsb_bits = cfg.k_bits
        q_k, scale_k = _quantize(key, msb_bits + lsb_bits)
        msb = torch.div(q_k, 2**lsb_bits, rounding_mode="floor")
        midpoint = 2 ** (lsb_bits - 1) if lsb_bits else 0
        coarse = probs_of((msb * 2**lsb_bits + midpoint) * scale_k)
        refetch = coarse.amax(-1) < cfg.refetch_threshold
        probs = torch.where(refetch[..., None], probs_of(q_k * scale_k), coarse)
    else:
        probs = probs_of(key)
    if cfg.value_keep < 1:
        # Each query row keeps ⌊allowed keys · value_keep⌋: causally masked (and padding) keys do not count.
        allowed = torch.full(probs.shape[:-1], key.shape[2])
        if attention_mask is not None:
            allowed = (attention_mask == 0).sum(-1).expand(probs.shape[:-1])
        keep = (allowed * cfg.value_keep + 1e-9).floor().long().clamp(min=1)
        rank = torch.sort(probs, dim=-1, descending=True, stable=True).indices.argsort(-1)
        used = rank < keep[..., None]
        RECORDED.setdefault("values", []).append(used.any(2).sum(-1))
        probs = probs * used
    if refetch is not None:
        RECORDED.setdefault("refetch", []).append(refetch.sum(-1))
    return (probs @ value).transpose(1, 2).contiguous(), probs


@pytest.fixture
def reference_implementation():
    AttentionInterface.register("spatten_test_reference", reference_attention)
    AttentionMaskInterface.register("spatten_test_reference", ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    RECORDED.clear()
    yield "spatten_test_reference"
    AttentionInterface._global_mapping.pop("spatten_test_reference")
    AttentionMaskInterface._global_mapping.pop("spatten_test_reference")


def run_reference(model, implementation, cfg, ids, pick=None, **kwargs):
    RECORDED.clear()
    RECORDED["config"] = cfg
    model.config._attn_implementation = implementation
    try:
        return (pick or primary_output)(model(input_ids=ids, **kwargs))
    finally:
        model.config._attn_implementation = "eager"


def primary_output(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def per_layer_head(rows, column):
    return torch.tensor(rows.sort_values(["layer", "head"])[column].to_numpy()).view(-1)


@pytest.mark.parametrize("family", ["gpt2", "bert", "qwen2"])
def test_local_value_pruning_matches_reference(family, reference_implementation):
    """Outputs, V rows fetched, and output_attentions: the probabilities that multiplied V (the reference zeroes
    the dropped entries)."""
    cfg = SpAttenConfig(value_keep=0.3)
    model = tiny_model(family, head="Model" if family == "bert" else None)
    ids, _ = random_batch(model, batch=1, length=13)
    with torch.no_grad():
        expected = run_reference(model, reference_implementation, cfg, ids, lambda out: out,
                                 output_attentions=True)
        values = torch.stack(RECORDED["values"])  # [layers, 1, H]
        with spatten.patch(model, cfg) as handle:
            got = model(input_ids=ids, output_attentions=True)
    torch.testing.assert_close(primary_output(got), primary_output(expected), atol=1e-5, rtol=0)
    assert len(got.attentions) == len(expected.attentions) == model.config.num_hidden_layers
    for layer, (g, e) in enumerate(zip(got.attentions, expected.attentions)):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0, msg=f"layer {layer}")
    assert torch.equal(per_layer_head(handle.trace.rows, "values_fetched"), values.view(-1))
    assert (handle.trace.rows["values_fetched"] < 13).any()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("threshold", [0.0, 0.25, 2.0])
def test_progressive_quantization_refetches_exactly_the_low_confidence_rows(family, threshold,
                                                                              reference_implementation):
    # float64: quantization is discontinuous, so in float32 the last-bit differences between the kernels' and
    # torch's matrix products (summation order, FMA, vector width: they differ between CPUs) flip a K or V level in
    # a later layer now and then, and the logits then differ by a quantization step (1.5e-3 on an AVX-512 Zen 4).
    # In float64 those differences are ~1e-16 and a flip has probability ~1e-12 per element, on any CPU. The
    # float32 kernels' agreement with the references on identical inputs is tested in tests/test_ops_*.py.
    cfg = SpAttenConfig(k_bits=(3, 4), v_bits=8, refetch_threshold=threshold)
    model = tiny_model(family).double()
    ids, _ = random_batch(model, batch=1, length=12)
    with torch.no_grad():
        expected = run_reference(model, reference_implementation, cfg, ids)
        refetch = torch.stack(RECORDED["refetch"])  # [layers, 1, H]
        with spatten.patch(model, cfg) as handle:
            got = model(input_ids=ids).logits
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)
    rows = handle.trace.rows
    assert torch.equal(per_layer_head(rows, "lsb_refetch_rows"), refetch.view(-1))
    if threshold == 0.0:
        assert (rows["lsb_refetch_rows"] == 0).all()
    elif threshold > 1.0:
        assert (rows["lsb_refetch_rows"] == rows["query_rows"]).all()
        # every row refetched: the output is attention with the full MSB+LSB keys
        full = run_reference(model, reference_implementation, SpAttenConfig(k_bits=(7, 0), v_bits=8, refetch_threshold=2.0), ids)
        torch.testing.assert_close(got, full, atol=1e-9, rtol=0)
    else:
        assert 0 < rows["lsb_refetch_rows"].sum() < rows["query_rows"].sum()

