"""Convert a llama2.c checkpoint (legacy v0 .bin) to a Hugging Face LlamaForCausalLM.

Legacy layout (llama2.c export.py `legacy_export`, read by run.c): 7 int32 (dim, hidden_dim, n_layers, n_heads,
n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is not shared), then fp32 arrays:
token embedding [V, dim], attention RMSNorm [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim],
wo [L, dim, dim], FFN RMSNorm [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim],
final RMSNorm [dim], RoPE tables [seq_len, head_size] (unused), then the classifier [V, dim] if unshared.

llama2.c applies RoPE to interleaved pairs (x0, x1), (x2, x3), ...; Hugging Face rotates halves
(rotate_half). Permuting the rows of wq and wk per head, as transformers' convert_llama_weights_to_hf does,
makes the two computations identical.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from spatten.models.llama2c_tokenizer import Llama2cTokenizer

_HEADER = struct.Struct("<7i")


def read_llama2c_header(path: Path) -> dict:
    with path.open("rb") as f:
        raw = f.read(_HEADER.size)
    if len(raw) < _HEADER.size:
        raise ValueError(f"{path}: too short for a llama2.c header ({len(raw)} bytes)")
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = _HEADER.unpack(raw)
    header = dict(dim=dim, hidden_dim=hidden, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads,
                  vocab_size=abs(vocab), seq_len=seq_len, shared_classifier=vocab > 0)
    for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"):
        if not 0 < header[name] <= 1 << 20:
            raise ValueError(f"{path}: header field {name} = {header[name]} is not a plausible size "
                             "(not a llama2.c legacy checkpoint?)")
    if dim % heads or heads % kv_heads:
        raise ValueError(f"{path}: dim {dim} / heads {heads} / kv_heads {kv_heads} do not divide")
    return header


def _rope_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Interleaved-pair RoPE rows -> rotate_half rows, per head (w: [n_heads * head_size, dim])."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def llama2c_state_dict(path: str | os.PathLike) -> tuple[dict, dict]:
    """(header, Hugging Face Llama state dict of float32 tensors) from a legacy llama2.c file."""
    import torch

    path = Path(path)
    h = read_llama2c_header(path)
    dim, hid, n_l, n_h, n_kv, vocab, seq = (h[k] for k in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                                           "vocab_size", "seq_len"))
    head = dim // n_h
    kv_dim = n_kv * head
    data = np.fromfile(path, dtype="<f4", offset=_HEADER.size)
    shapes = [("emb", (vocab, dim)), ("rms_att", (n_l, dim)), ("wq", (n_l, dim, dim)), ("wk", (n_l, kv_dim, dim)),
              ("wv", (n_l, kv_dim, dim)), ("wo", (n_l, dim, dim)), ("rms_ffn", (n_l, dim)), ("w1", (n_l, hid, dim)),
              ("w2", (n_l, dim, hid)), ("w3", (n_l, hid, dim)), ("rms_final", (dim,)), ("rope", (seq, head))]
    if not h["shared_classifier"]:
        shapes.append(("wcls", (vocab, dim)))
    need = sum(int(np.prod(s)) for _, s in shapes)
    if data.size != need:
        raise ValueError(f"{path}: holds {data.size} floats after the header, the header implies {need} "
                         "(truncated file or not a legacy llama2.c checkpoint)")
    arrays, off = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        arrays[name] = data[off:off + n].reshape(shape)
        off += n
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    sd = {"model.embed_tokens.weight": t(arrays["emb"]), "model.norm.weight": t(arrays["rms_final"]),
          "lm_head.weight": t(arrays.get("wcls", arrays["emb"]))}
    for i in range(n_l):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = t(_rope_permute(arrays["wq"][i], n_h))
        sd[p + "self_attn.k_proj.weight"] = t(_rope_permute(arrays["wk"][i], n_kv))
        sd[p + "self_attn.v_proj.weight"] = t(arrays["wv"][i])
        sd[p + "self_attn.o_proj.weight"] = t(arrays["wo"][i])
        sd[p + "mlp.gate_proj.weight"] = t(arrays["w1"][i])
        sd[p + "mlp.down_proj.weight"] = t(arrays["w2"][i])
        sd[p + "mlp.up_proj.weight"] = t(arrays["w3"][i])
        sd[p + "input_layernorm.weight"] = t(arrays["rms_att"][i])
        sd[p + "post_attention_layernorm.weight"] = t(arrays["rms_ffn"][i])
    return h, sd


def from_llama2c(model_bin: str | os.PathLike, tokenizer_bin: str | os.PathLike | None = None):
    """(LlamaForCausalLM in eval mode, Llama2cTokenizer or None) from llama2.c files.

    The model uses eager attention, float32, RMSNorm eps 1e-5 and RoPE theta 10000 as llama2.c does.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    model_bin = Path(model_bin)
    if not model_bin.is_file():
        raise FileNotFoundError(f"llama2.c checkpoint {model_bin} not found")
    h, sd = llama2c_state_dict(model_bin)
    config = LlamaConfig(
        vocab_size=h["vocab_size"], hidden_size=h["dim"], intermediate_size=h["hidden_dim"],
        num_hidden_layers=h["n_layers"], num_attention_heads=h["n_heads"], num_key_value_heads=h["n_kv_heads"],
        max_position_embeddings=h["seq_len"], rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=h["shared_classifier"], bos_token_id=1, eos_token_id=2, pad_token_id=0,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # rotary inv_freq buffers are computed, not stored
    missing = [k for k in missing if "rotary_emb" not in k]
    if missing or unexpected:
        raise RuntimeError(f"llama2.c conversion left weights unmatched: missing {missing}, unexpected {unexpected}")
    model.eval()
    tok = None
    if tokenizer_bin is not None:
        tokenizer_bin = Path(tokenizer_bin)
        if not tokenizer_bin.is_file():
            raise FileNotFoundError(f"llama2.c tokenizer {tokenizer_bin} not found")
        tok = Llama2cTokenizer.from_file(tokenizer_bin, vocab_size=h["vocab_size"])
    return model, tok
