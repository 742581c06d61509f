"""SpAtten generation configs and kvpress presses on one model, one data set, one protocol, at equal measured
KV budget: perplexity, greedy agreement with the dense model, KV held in prefill and decode, wall time, and
the SpAtten hardware cost of every method (its kept-token counts replayed by the simulator as a trace).

Protocol (per passage of `prompt + scored` tokens): prefill the first `prompt` tokens in one forward, then
(a) score the next `scored` tokens teacher-forced, one at a time through the KV cache, and (b) generate `greedy`
tokens greedily from the same prompt and compare them position by position with the dense model's. Positions
are passed explicitly, so a method that shortens the cache never shifts RoPE.

KV held, measured the same way for every method from the cache itself (not from a method's own bookkeeping):
prefill = mean over layers of (cache length after the prefill) / prompt; decode = mean over decode steps and
layers of (cache length after the step) / (tokens seen). kvpress is optional: `kvpress_method` imports it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import numpy as np
import pandas as pd

from spatten.eval import hardware, lm
from spatten.eval.metrics import perplexity


@dataclass(frozen=True)
class Protocol:
    """prompt: tokens prefilled; scored: tokens scored teacher-forced after it; greedy: tokens generated."""

    prompt: int = 192
    scored: int = 64
    greedy: int = 64
    passages: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("prompt", "scored", "greedy", "passages"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Protocol.{name} must be an integer >= 1, got {value!r}")

    @property
    def passage_length(self) -> int:
        return self.prompt + self.scored


@dataclass(frozen=True)
class Method:
    """One row of the table. session(model) is a context manager that applies the method for one sequence;
    `phases` says where it compresses."""

    name: str
    kind: str  # "dense" | "spatten" | "kvpress"
    keep: float | None
    phases: str  # "none" | "prefill" | "prefill+decode"
    session: Callable[[Any], ContextManager] = field(repr=False)
    uses_attention: bool = False  # for the replayed trace: the method scores tokens by attention


def dense_method() -> Method:
    return Method("dense", "dense", None, "none", lambda model: contextlib.nullcontext())


def spatten_method(name: str, config, keep: float | None = None) -> Method:
    """A SpAtten config as a table row (patched for each sequence)."""
    import spatten

    def session(model):
        handle = spatten.patch(model, config)
        # The harness measures the cache it finds: no evicted entries may linger there for decode speed.
        handle.compact_slack = 0.0
        return handle

    phases = "prefill+decode" if config.prunes_tokens else "none"
    return Method(name, "spatten", keep, phases, session, True)


KVPRESS_SCORERS = {  # name -> (kvpress class name, scores by attention)
    "random": ("RandomPress", False),
    "tova": ("TOVAPress", True),
    "knorm": ("KnormPress", False),
    "streaming_llm": ("StreamingLLMPress", False),
    "snapkv": ("SnapKVPress", True),
}


def kvpress_method(scorer: str, keep: float, *, decode: bool = True) -> Method:
    """A kvpress press keeping `keep` of the prompt after the prefill and, with decode, of all tokens seen after
    every decode step (CompressionRatioDecodingPress, compression_interval 1); kvpress must be installed."""
    import kvpress

    if scorer not in KVPRESS_SCORERS:
        raise ValueError(f"unknown kvpress scorer {scorer!r}; known: {sorted(KVPRESS_SCORERS)}")
    if not 0.0 < keep < 1.0:
        raise ValueError(f"keep must be in (0, 1) for a press, got {keep}")
    cls_name, uses_attention = KVPRESS_SCORERS[scorer]
    cls = getattr(kvpress, cls_name)

    seeded = {"seed": 0} if scorer == "random" else {}  # reproducible tables

    def session(model):
        prefill = cls(compression_ratio=1.0 - keep, **seeded)
        if not decode:
            return prefill(model)
        decoding = kvpress.CompressionRatioDecodingPress(base_press=cls(**seeded), target_compression_ratio=1.0 - keep,
                                                         compression_interval=1, hidden_states_buffer_size=0)
        return kvpress.PrefillDecodingPress(prefilling_press=prefill, decoding_press=decoding)(model)

    phases = "prefill+decode" if decode else "prefill"
    return Method(f"kvpress {scorer} ({phases})", "kvpress", keep, phases, session, uses_attention)


# ---- data --------------------------------------------------------------------------------------------------
def passages(data: str, loaded, protocol: Protocol, data_dir=None) -> list[list[int]]:
    """`protocol.passages` token lists of `protocol.passage_length`: "stories" (sampled from the unpruned model,
    as spatten.eval.lm makes that corpus) or an LM corpus cut into consecutive passages."""
    from spatten.eval.tasks import lm_corpus

    n, length = protocol.passages, protocol.passage_length
    if data == "stories":
        bos = getattr(loaded.tokenizer, "bos_token_id", None)
        return lm.sample_stories(loaded.model, n, length, seed=protocol.seed, bos_token_id=1 if bos is None else bos)
    text = lm_corpus(data).read(data_dir, max_chars=n * length * 8)
    ids = loaded.encode(text)
    if len(ids) < n * length:
        raise ValueError(f"{data}: {len(ids)} tokens, fewer than {n} passages of {length}")
    return [ids[i * length:(i + 1) * length] for i in range(n)]


# ---- one sequence ------------------------------------------------------------------------------------------
@dataclass
class Run:
    """What one sequence did: outputs plus the cache length per layer after the prefill and after each step."""

    logits: list  # [V] float32 per predicted position (teacher-forced runs)
    tokens: list[int]  # greedy runs
    prefill_cache: list[int]
    decode_cache: list[list[int]]  # per decode step, per layer
    seen: list[int]  # tokens seen after each decode step


def _cache_lengths(cache, layers: int) -> list[int]:
    from spatten.patch.compat import cache_layer

    return [int(cache_layer(cache, layer).keys.shape[-2]) for layer in range(layers)]


def run_sequence(model, ids: list[int], prompt: int, steps: int, greedy: bool) -> Run:
    """Prefill ids[:prompt], then `steps` - 1 decode steps: teacher-forced on ids (greedy False) or greedy."""
    import torch

    layers = model.config.num_hidden_layers
    kw = lm._cache_kw(model)
    run = Run([], [], [], [], [])
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids[:prompt]]), position_ids=torch.arange(prompt)[None], use_cache=True)
        cache = lm._returned_cache(out)
        run.prefill_cache = _cache_lengths(cache, layers)
        for t in range(prompt, prompt + steps):
            last = out.logits[0, -1].float()
            run.logits.append(last)
            token = int(last.argmax()) if greedy else ids[t]
            run.tokens.append(int(last.argmax()))
            if t == prompt + steps - 1:
                break
            out = model(input_ids=torch.tensor([[token]]), position_ids=torch.tensor([[t]]), use_cache=True,
                        **{kw: cache})
            cache = lm._returned_cache(out)
            run.decode_cache.append(_cache_lengths(cache, layers))
            run.seen.append(t + 1)
    return run


# ---- replaying a press as a trace --------------------------------------------------------------------------
def replay_trace(run: Run, meta: dict, prompt: int, method: Method):
    """A spatten Trace of what a KV-compression method did in `run`: a dense prefill attention, then per decode
    step and layer the keys it attended (the cache before the step plus the new token), and a token top-k
    wherever the cache shrank (the selection SpAtten's top-k engine would run)."""
    from spatten.trace import COLUMN_NAMES, Trace

    layers, heads, d_head = meta["layers"], meta["heads"], meta["d_head"]
    events = [("summarize", 0, prompt, [prompt] * layers, run.prefill_cache)]  # (stage, step, kv, keys, after)
    before = run.prefill_cache
    for step, (after, seen) in enumerate(zip(run.decode_cache, run.seen)):
        events.append(("generate", step, seen, [b + 1 for b in before], after))
        before = after
    rows: dict[str, list] = {name: [] for name in COLUMN_NAMES}
    for stage, step, kv_len, keys, after in events:
        for layer in range(layers):
            shrank = after[layer] < keys[layer]
            for head in range(heads):
                last_head = head == heads - 1
                values = dict(sequence=0, stage=stage, step=step, layer=layer, head=head, head_kept=True,
                              d_head=d_head,
                              query_rows=prompt if stage == "summarize" else 1, kv_len=kv_len,
                              keys_fetched=keys[layer], values_fetched=keys[layer], k_msb_bits=-1, k_lsb_bits=-1,
                              q_bits=-1, v_bits=-1, threshold=-1.0, lsb_refetch_rows=0,
                              accumulate_importance=method.uses_attention, rescale_importance=False,
                              topk_kind="token" if shrank and last_head else "none",
                              topk_k=after[layer] if shrank and last_head else -1)
                for name in COLUMN_NAMES:
                    rows[name].append(values[name])
    return Trace.from_columns({name: np.array(v) for name, v in rows.items()}, meta)


def decode_only(trace):
    """The generate-stage rows of a trace: the memory-bound decode steps where a smaller KV cache pays off
    (the prefill is one dense, compute-bound pass for every method here but SpAtten's inside-prefill pruning)."""
    from spatten.trace import Trace

    rows = trace.rows
    return Trace(rows[rows["stage"] == "generate"].reset_index(drop=True), trace.meta)


# ---- one method over all passages --------------------------------------------------------------------------
@dataclass
class Reference:
    """The dense model's outputs on the same passages: teacher-forced logits and greedy tokens."""

    logits: list
    tokens: list[list[int]]


def reference(model, texts: list[list[int]], protocol: Protocol) -> Reference:
    """The unpatched model through the same protocol (teacher-forced logits [scored, V], greedy tokens)."""
    import torch

    teacher = [torch.stack(run_sequence(model, ids, protocol.prompt, protocol.scored, False).logits) for ids in texts]
    greedy = [run_sequence(model, ids, protocol.prompt, protocol.greedy, True).tokens for ids in texts]
    return Reference(teacher, greedy)


def evaluate(model, method: Method, texts: list[list[int]], protocol: Protocol, ref: Reference, meta: dict, *,
             simulate: bool = True, preset: str = "spatten") -> dict:
    """One table row: perplexity, KL / top-1 agreement (teacher-forced) and greedy agreement with dense, KV held,
    wall seconds, and the simulated SpAtten cost of the first passage's teacher-forced decode steps."""
    import torch

    start = time.perf_counter()
    nll, n_tokens, logits, agree_tokens, agree_total = 0.0, 0, [], 0, 0
    prefill_kv, decode_kv, first_trace = [], [], None
    for i, ids in enumerate(texts):
        with method.session(model):
            run = run_sequence(model, ids, protocol.prompt, protocol.scored, False)
        if i == 0:
            # Every method, SpAtten's included, is costed from its cache lengths the same way (a patch's own
            # trace would also be available, but would not record a layer-0 top-k: see docs/generation.md).
            first_trace = replay_trace(run, meta, protocol.prompt, method)
        scored = torch.stack(run.logits)
        targets = torch.tensor(ids[protocol.prompt:protocol.prompt + protocol.scored])
        nll += float(torch.nn.functional.cross_entropy(scored, targets, reduction="sum"))
        n_tokens += len(targets)
        logits.append(scored)
        prefill_kv.append(np.mean(run.prefill_cache) / protocol.prompt)
        decode_kv.extend(np.mean(c) / s for c, s in zip(run.decode_cache, run.seen))
        with method.session(model):
            tokens = run_sequence(model, ids, protocol.prompt, protocol.greedy, True).tokens
        agree_tokens += int(np.sum(np.array(tokens) == np.array(ref.tokens[i])))
        agree_total += len(tokens)
    seconds = time.perf_counter() - start
    kl, top1 = lm.agreement_stats(ref.logits, logits)
    row = {"method": method.name, "kind": method.kind, "keep": method.keep, "phases": method.phases,
           "perplexity": perplexity(nll, n_tokens), "kl_vs_dense": kl, "top1_vs_dense": top1,
           "greedy_agreement": agree_tokens / agree_total, "kv_prefill": float(np.mean(prefill_kv)),
           "kv_decode": float(np.mean(decode_kv)), "seconds": seconds}
    if simulate:
        summary = hardware.hardware_summary(hardware.simulate(decode_only(first_trace), preset), preset)
        row.update({"hw_speedup_vs_dense": summary["speedup_vs_dense"],
                    "hw_dram_reduction_vs_dense": summary["dram_reduction_vs_dense"],
                    "hw_energy_reduction_vs_dense": summary["energy_reduction_vs_dense"],
                    "hw_cycles": summary["cycles"]})
    return row


def compare(model, methods: list[Method], texts: list[list[int]], protocol: Protocol, *, simulate: bool = True,
            progress: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Run every method on the same passages; one row per method (dense first, as the reference)."""
    from spatten.patch.compat import describe

    meta = describe(model).meta()
    ref = reference(model, texts, protocol)
    rows = []
    for method in methods:
        rows.append(evaluate(model, method, texts, protocol, ref, meta, simulate=simulate))
        if progress is not None:
            progress(rows[-1])
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    """The comparison as a Markdown table (numbers rounded for reading; the CSV keeps them whole)."""
    columns = [("method", "method"), ("keep", "keep"), ("perplexity", "ppl"), ("greedy_agreement", "greedy agree"),
               ("top1_vs_dense", "top-1 agree"), ("kv_prefill", "KV prefill"), ("kv_decode", "KV decode"),
               ("seconds", "wall s"), ("hw_speedup_vs_dense", "HW decode speedup"),
               ("hw_dram_reduction_vs_dense", "HW decode DRAM reduction")]
    columns = [(c, h) for c, h in columns if c in frame]
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "|".join("---" if c == "method" else "---:"
                                                                           for c, _ in columns) + "|"]
    for _, row in frame.iterrows():
        cells = []
        for c, _ in columns:
            value = row[c]
            if c == "method":
                cells.append(str(value))
            elif value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("-")
            elif c == "seconds":
                cells.append(f"{value:.0f}")
            else:
                cells.append(f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def standard_methods(keeps, *, kvpress: bool = True, dense: bool = True) -> list[Method]:
    """The README's table: dense, then per keep the paper-faithful SpAtten decoder pruning at the same KV budget,
    `SpAttenConfig.for_generation(keep)`, and kvpress presses compressing prefill and decode (TOVA,
    StreamingLLM, Random) or the prefill only (Random, SnapKV)."""
    from spatten.config import PruningSchedule, SpAttenConfig

    methods = [dense_method()] if dense else []
    for keep in keeps:
        paper = SpAttenConfig(token_keep=keep, schedule=PruningSchedule(ramp="budget"))
        methods.append(spatten_method("spatten paper-faithful (budget ramp)", paper, keep))
        methods.append(spatten_method(f"spatten for_generation({keep})", SpAttenConfig.for_generation(keep), keep))
        if kvpress:
            methods += [kvpress_method(s, keep) for s in ("tova", "streaming_llm", "random")]
            methods += [kvpress_method(s, keep, decode=False) for s in ("random", "snapkv")]
    return methods
