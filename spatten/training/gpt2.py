"""Train a small GPT-2 on the local WikiText / PTB text, so the GPT-2 family has a real trained model here.

No GPT-2 checkpoint is available offline, so this trains one: a word-level tokenizer (the corpora are already
word-tokenized, one `<eos>` per line as in the standard word-level LM setup) and a few-layer GPT2LMHeadModel,
saved as an ordinary Hugging Face directory (config, weights, tokenizer) that `--model PATH` accepts.
Held-out perplexity before and after training is written to training.json.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from pathlib import Path

from spatten.atomic import atomic_write_text

SPECIALS = ("<unk>", "<eos>")


def corpus_words(text: str) -> list[str]:
    """Words of a word-tokenized corpus, one <eos> per line."""
    words = []
    for line in text.splitlines():
        if line.strip():
            words.extend(w for w in line.split() if w != "<eos>")
            words.append("<eos>")
    return words


def build_tokenizer(words: list[str], vocab_size: int):
    """A word-level PreTrainedTokenizerFast over the most frequent words (<unk> for the rest)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if vocab_size <= len(SPECIALS):
        raise ValueError(f"vocab_size must exceed {len(SPECIALS)}, got {vocab_size}")
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for word, _ in Counter(w for w in words if w not in vocab).most_common(vocab_size - len(SPECIALS)):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", bos_token="<eos>",
                                   pad_token="<eos>")


def _chunks_loss(model, ids, seq_len: int, max_chunks: int) -> float:
    import torch

    n = min(max_chunks, (len(ids) - 1) // seq_len)
    if n < 1:
        raise ValueError(f"held-out text too short for one {seq_len}-token chunk")
    x = torch.tensor(ids[:n * seq_len]).view(n, seq_len)
    with torch.no_grad():
        return float(model(input_ids=x, labels=x).loss)


def train_gpt2(out: str | os.PathLike, *, corpora=("wikitext-2-valid", "ptb-valid"), heldout: str = "ptb",
               steps: int = 300, n_layer: int = 4, n_embd: int = 128, n_head: int = 4, seq_len: int = 128,
               batch_size: int = 16, vocab_size: int = 8000, lr: float = 3e-3, max_train_words: int | None = None,
               seed: int = 0, data_dir=None) -> dict:
    """Train and save to `out`; returns the summary also written to out/training.json.

    corpora: LM corpus names to train on (the train splits are not in the shared data; the valid splits are).
    heldout: corpus whose perplexity is reported before and after training.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from spatten.data import lm_corpus
    from spatten.threads import torch_threads

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    words = []
    for name in corpora:
        words += corpus_words(lm_corpus(name).read(data_dir))
    if max_train_words is not None:
        words = words[:max_train_words]
    tokenizer = build_tokenizer(words, vocab_size)
    ids = tokenizer.convert_tokens_to_ids(words)
    held_ids = tokenizer.convert_tokens_to_ids(corpus_words(lm_corpus(heldout).read(data_dir, max_chars=200_000)))
    if len(ids) <= seq_len + 1:
        raise ValueError(f"only {len(ids)} training tokens; need more than seq_len + 1 = {seq_len + 1}")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=seq_len, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        attn_implementation="eager")
    model = GPT2LMHeadModel(config)
    data = torch.tensor(ids)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    with torch_threads(max(1, (os.cpu_count() or 1))):
        model.eval()
        loss_before = _chunks_loss(model, held_ids, seq_len, 32)
        model.train()
        for _ in range(steps):
            offsets = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=gen)
            x = torch.stack([data[o:o + seq_len] for o in offsets.tolist()])
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        model.eval()
        loss_after = _chunks_loss(model, held_ids, seq_len, 32)
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    summary = {"corpora": list(corpora), "train_tokens": len(ids), "vocab_size": len(tokenizer), "steps": steps,
               "n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, "seq_len": seq_len,
               "heldout": heldout, "heldout_ppl_before": math.exp(loss_before),
               "heldout_ppl_after": math.exp(loss_after), "wall_seconds": time.perf_counter() - start}
    atomic_write_text(out / "training.json", json.dumps(summary, indent=1))
    return summary
