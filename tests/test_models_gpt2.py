"""The GPT-2 path: a tiny GPT-2 trained on local text learns, saves as a Hugging Face directory, and evaluates
patched like any other decoder."""

import json

import pytest

from spatten.eval import run_lm
from spatten.models import load_model
from spatten.training.gpt2 import build_tokenizer, corpus_words, train_gpt2


def test_word_level_tokenizer():
    words = corpus_words("the cat sat\n \nthe dog\n")
    assert words == ["the", "cat", "sat", "<eos>", "the", "dog", "<eos>"]
    tok = build_tokenizer(words, vocab_size=5)  # <unk>, <eos>, the, <2 most frequent of the rest>
    assert len(tok) == 5
    ids = tok("the zebra")["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("the") and ids[1] == tok.unk_token_id
    with pytest.raises(ValueError, match="vocab_size must exceed"):
        build_tokenizer(words, 2)


def test_tiny_gpt2_trains_saves_and_evaluates_patched(tmp_path, data_dir):
    out = tmp_path / "gpt2"
    summary = train_gpt2(out, corpora=["ptb-valid"], steps=40, n_layer=2, n_embd=32, n_head=2, seq_len=32,
                         batch_size=8, vocab_size=2000, max_train_words=40_000, data_dir=data_dir)
    # it learned: held-out PTB perplexity falls well below the untrained model's (~ vocabulary size)
    assert summary["heldout_ppl_after"] < 0.5 * summary["heldout_ppl_before"]
    assert json.loads((out / "training.json").read_text())["steps"] == 40
    loaded = load_model(out, kind="decoder")
    assert loaded.model.config.model_type == "gpt2"
    dense = run_lm("ptb", loaded, {"token_keep": 1.0}, max_tokens=30, window=16, stride=8, simulate=False)
    pruned = run_lm("ptb", loaded, {"token_keep": 0.5}, max_tokens=30, window=16, stride=8, simulate=False)
    assert dense["metrics"]["perplexity"] == pytest.approx(dense["metrics"]["perplexity_dense"], rel=1e-4)
    assert pruned["kept"]["token_keep_measured"] < 1.0
    assert pruned["metrics"]["kl_vs_dense"] > 0
