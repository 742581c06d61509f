"""Which tokens of one sentence survive each layer of a patched encoder (the paper's "film perfect" example)."""

from __future__ import annotations


def kept_tokens_by_layer(loaded, config, sentence: str, max_length: int = 128) -> tuple[list[str], list[list[int]]]:
    """(tokens of the sentence, per layer the positions that entered that layer) under `config`."""
    import torch

    import spatten
    from spatten.eval.runners import resolve_config

    cfg = resolve_config(config)
    enc = loaded.tokenizer([sentence], truncation=True, max_length=max_length, return_tensors="pt")
    tokens = loaded.tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    with spatten.patch(loaded.model, cfg) as handle, torch.no_grad():
        loaded.model(**enc)
        kept = [[int(p) for p in layer[0].tolist() if p >= 0] for layer in handle.last_kept_positions]
    return tokens, kept
