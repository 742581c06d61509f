"""llama2.c conversion: reproduces llama2.c's documented greedy sample and its tokenizer."""

import struct

import numpy as np
import pytest
import torch

from spatten.models import Llama2cTokenizer, from_llama2c
from spatten.models.llama2c import _rope_permute, read_llama2c_header

# llama2.c doc/stories260K.md: `./run stories260K.bin -z tok512.bin -t 0.0` (greedy) prints this first.
REFERENCE_SAMPLE = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                    "One day, she saw a big, red ball. She wanted to play with it, but it was too high.")


@pytest.fixture(scope="module")
def stories(data_dir):
    folder = data_dir / "models" / "stories260K-llama2c"
    return from_llama2c(folder / "stories260K.bin", folder / "tok512.bin")


def test_greedy_sample_from_bos_matches_llama2c(stories):
    model, tok = stories
    assert model.config.num_hidden_layers == 5 and model.config.num_key_value_heads == 4
    out = model.generate(torch.tensor([[tok.bos_token_id]]), max_new_tokens=60, do_sample=False)
    text = tok.decode(out[0].tolist())
    assert text.startswith(REFERENCE_SAMPLE[:160]), text


def test_tokenizer_round_trip_and_merges(stories):
    _, tok = stories
    for text in ["Once upon a time, Lily went to the park.", "Ünïcödé → bytes\nnew line", "a"]:
        ids = tok.encode(text)
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids) == text
    # merges pick the highest-scoring pair: the common word becomes fewer tokens than its characters
    assert len(tok.encode("Once upon a time", bos=False)) < len(" Once upon a time")
    assert tok.encode("", bos=False) == []


def test_rope_permutation_matches_rotate_half():
    # llama2.c rotates interleaved pairs; HF rotates halves. With permuted rows, q·k agrees.
    torch.manual_seed(0)
    heads, hs, dim, pos = 2, 8, 16, 5
    wq = torch.randn(heads * hs, dim)
    x = torch.randn(dim)
    freqs = 1.0 / (10000 ** (torch.arange(0, hs, 2).float() / hs))
    ang = pos * freqs
    q = (wq @ x).view(heads, hs // 2, 2)
    interleaved = torch.stack([q[..., 0] * ang.cos() - q[..., 1] * ang.sin(),
                               q[..., 0] * ang.sin() + q[..., 1] * ang.cos()], -1).reshape(heads, hs)
    qh = (torch.from_numpy(_rope_permute(wq.numpy(), heads)) @ x).view(heads, hs)
    cos, sin = torch.cat([ang.cos(), ang.cos()]), torch.cat([ang.sin(), ang.sin()])
    rot = torch.cat([-qh[:, hs // 2:], qh[:, :hs // 2]], -1)
    rotated_half = qh * cos + rot * sin
    # same values up to the per-head order (pairs -> halves)
    perm = torch.cat([torch.arange(0, hs, 2), torch.arange(1, hs, 2)])
    assert torch.allclose(rotated_half, interleaved[:, perm], atol=1e-5)


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        from_llama2c(tmp_path / "missing.bin")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(struct.pack("<7i", 64, 172, 5, 8, 4, 512, 512) + np.zeros(10, "<f4").tobytes())
    with pytest.raises(ValueError, match="truncated file"):
        from_llama2c(bad)
    (tmp_path / "junk.bin").write_bytes(b"\xff" * 28)
    with pytest.raises(ValueError, match="not a plausible size"):
        read_llama2c_header(tmp_path / "junk.bin")
    tok = tmp_path / "tok.bin"
    tok.write_bytes(struct.pack("<i", 4) + struct.pack("<fi", 0.0, 99))
    with pytest.raises(ValueError, match="invalid length"):
        Llama2cTokenizer.from_file(tok)
