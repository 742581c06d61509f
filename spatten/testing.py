"""Tiny random-weight Hugging Face models of every supported family, for tests, notebooks and benchmarks.

Nothing is downloaded: each model is built from a config in memory, seeded, in eval mode.

    model = spatten.testing.tiny_model("llama")            # LlamaForCausalLM, 4 layers, 4 heads, 2 KV heads
    ids, mask = spatten.testing.random_batch(model, batch=2, length=12, pad=3)
"""

from __future__ import annotations

from typing import Any

import torch

ENCODER_FAMILIES = ("bert", "roberta")
DECODER_FAMILIES = ("gpt2", "llama", "mistral", "qwen2")
FAMILIES = ENCODER_FAMILIES + DECODER_FAMILIES

_VOCAB = 101


def _config(family: str, layers: int, heads: int, hidden: int, kv_heads: int | None, **overrides: Any):
    import transformers as tf

    common_enc = dict(vocab_size=_VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=2 * hidden, max_position_embeddings=128, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, pad_token_id=0)
    common_dec = dict(vocab_size=_VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads or heads, intermediate_size=2 * hidden,
                      max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                      tie_word_embeddings=False)
    if family == "bert":
        cfg = tf.BertConfig(**common_enc)
    elif family == "roberta":
        cfg = tf.RobertaConfig(**{**common_enc, "max_position_embeddings": 130, "pad_token_id": 1})
    elif family == "gpt2":
        cfg = tf.GPT2Config(vocab_size=_VOCAB, n_embd=hidden, n_layer=layers, n_head=heads, n_inner=2 * hidden,
                            n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                            eos_token_id=2, pad_token_id=0)
    elif family == "llama":
        cfg = tf.LlamaConfig(**common_dec)
    elif family == "mistral":
        cfg = tf.MistralConfig(**common_dec, sliding_window=None)
    elif family == "qwen2":
        cfg = tf.Qwen2Config(**common_dec)
    else:
        raise ValueError(f"unknown model family {family!r}; tiny models exist for {FAMILIES}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_model(family: str, *, layers: int = 4, heads: int = 4, hidden: int = 32, kv_heads: int | None = None,
               head: str | None = None, seed: int = 0, attn_implementation: str = "eager", **overrides: Any):
    """A seeded random model in eval mode.

    family: one of FAMILIES. head: the model class suffix, default "ForSequenceClassification" for encoders and
    "ForCausalLM"/"LMHeadModel" for decoders; pass "Model" for the bare base model. kv_heads defaults to
    heads // 2 for the Llama family (GQA) and to heads otherwise. overrides: extra config attributes.
    """
    import transformers as tf

    if kv_heads is None:
        kv_heads = heads // 2 if family in ("llama", "mistral", "qwen2") and heads % 2 == 0 else heads
    cfg = _config(family, layers, heads, hidden, kv_heads, **overrides)
    cfg._attn_implementation = attn_implementation
    prefix = {"bert": "Bert", "roberta": "Roberta", "gpt2": "GPT2", "llama": "Llama", "mistral": "Mistral",
              "qwen2": "Qwen2"}[family]
    if head is None:
        head = "ForSequenceClassification" if family in ENCODER_FAMILIES else (
            "LMHeadModel" if family == "gpt2" else "ForCausalLM")
    cls = getattr(tf, prefix + head)
    torch.manual_seed(seed)
    model = cls(cfg)
    # Random init uses std 0.02, which makes attention nearly uniform; wider weights give peaked attention maps
    # so that pruning decisions in tests are not decided by float noise.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "embed" not in name and "wte" not in name and "wpe" not in name:
                param.normal_(0.0, 1.5 / hidden**0.5)
    return model.eval()


def random_batch(model, *, batch: int = 2, length: int = 12, pad: int = 0, left_pad: bool | None = None,
                 seed: int = 0, lengths: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids [batch, length] and a 0/1 attention mask [batch, length].

    The last row is shortened by `pad` padding tokens, on the left for decoders and on the right for encoders
    unless `left_pad` says otherwise. lengths: instead of `pad`, the real length of every row (batch and length
    follow from it: len(lengths) rows, max(lengths) columns). Special ids (< 3) are avoided in the content.
    """
    if lengths is not None:
        if pad or not lengths or min(lengths) < 1:
            raise ValueError(f"lengths must be positive row lengths, without pad; got {lengths} and pad={pad}")
        batch, length = len(lengths), max(lengths)
    elif pad and not 0 < pad < length:
        raise ValueError(f"pad must be in [0, length), got {pad}")
    else:
        lengths = [length] * (batch - 1) + [length - pad] if batch else []
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    if left_pad is None:
        left_pad = not _is_encoder(model)
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    for row, real in enumerate(lengths):
        if real < length:
            cols = slice(0, length - real) if left_pad else slice(real, length)
            mask[row, cols] = 0
            ids[row, cols] = pad_id
    return ids, mask


def real_tokens(ids: torch.Tensor, mask: torch.Tensor, row: int) -> torch.Tensor:
    """Row `row` of a padded batch without its padding: ids [1, real length]."""
    return ids[row][mask[row].bool()][None]


def padding_offset(mask: torch.Tensor, row: int) -> int:
    """Columns of left padding before row `row`'s first real token (0 for right padding)."""
    return int(mask[row].long().argmax())


def _is_encoder(model) -> bool:
    return getattr(model.config, "model_type", "") in ENCODER_FAMILIES
