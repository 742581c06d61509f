"""The llama2.c tokenizer (tok*.bin): SentencePiece-style BPE where merges are chosen by piece score.

File layout: int32 max_token_len, then per token: float32 score, int32 byte length, bytes. Token 0 is <unk>,
1 is <s> (BOS), 2 is </s> (EOS), 3..258 are the byte-fallback pieces <0x00>..<0xFF> when the vocabulary has them.
Encoding follows llama2.c's run.c `encode`: a dummy space prefix, one piece per UTF-8 character (byte
fallback otherwise), then repeatedly merge the adjacent pair whose merged piece has the highest score.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

_BYTE_PIECE = re.compile(rb"^<0x([0-9A-Fa-f]{2})>$")


class Llama2cTokenizer:
    """encode(text) -> list[int] and decode(ids) -> str, bit-compatible with llama2.c's run.c."""

    unk_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    pad_token_id = 0

    def __init__(self, pieces: list[bytes], scores: list[float], max_token_len: int):
        if len(pieces) != len(scores) or len(pieces) < 3:
            raise ValueError(f"a llama2.c vocabulary needs >= 3 pieces with one score each, got {len(pieces)}")
        self.pieces, self.scores, self.max_token_len = pieces, scores, max_token_len
        self._index = {}
        for i, piece in enumerate(pieces):
            self._index.setdefault(piece, i)  # run.c's bsearch finds some match; pieces are unique in practice
        self._byte_ids = {}
        for i, piece in enumerate(pieces):
            m = _BYTE_PIECE.match(piece)
            if m:
                self._byte_ids[int(m.group(1), 16)] = i

    @classmethod
    def from_file(cls, path: str | os.PathLike, vocab_size: int | None = None) -> Llama2cTokenizer:
        path = Path(path)
        data = path.read_bytes()
        if len(data) < 4:
            raise ValueError(f"{path}: too short to be a llama2.c tokenizer")
        (max_len,), off = struct.unpack_from("<i", data, 0), 4
        pieces, scores = [], []
        while off < len(data) and (vocab_size is None or len(pieces) < vocab_size):
            if off + 8 > len(data):
                raise ValueError(f"{path}: truncated entry {len(pieces)} at byte {off}")
            score, length = struct.unpack_from("<fi", data, off)
            off += 8
            if length < 0 or length > max_len or off + length > len(data):
                raise ValueError(f"{path}: entry {len(pieces)} has an invalid length {length}")
            pieces.append(data[off:off + length])
            scores.append(score)
            off += length
        if vocab_size is not None and len(pieces) != vocab_size:
            raise ValueError(f"{path}: holds {len(pieces)} tokens, the model expects {vocab_size}")
        return cls(pieces, scores, max_len)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids = [self.bos_token_id] if bos else []
        tokens: list[int] = []
        if text:
            dummy = self._index.get(b" ")
            if dummy is not None:
                tokens.append(dummy)
            for ch in text:
                raw = ch.encode("utf-8")
                if raw in self._index:
                    tokens.append(self._index[raw])
                else:  # byte fallback: run.c adds 3, i.e. the <0xXX> pieces
                    tokens.extend(self._byte_ids.get(b, self.unk_token_id) for b in raw)
        while True:
            best, best_id, best_pos = -1e10, -1, -1
            for i in range(len(tokens) - 1):
                merged = self._index.get(self.pieces[tokens[i]] + self.pieces[tokens[i + 1]])
                if merged is not None and self.scores[merged] > best:
                    best, best_id, best_pos = self.scores[merged], merged, i
            if best_pos < 0:
                break
            tokens[best_pos:best_pos + 2] = [best_id]
        ids += tokens
        if eos:
            ids.append(self.eos_token_id)
        return ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        out = bytearray()
        prev = None
        for tid in (int(t) for t in ids):
            if not 0 <= tid < self.vocab_size:
                raise ValueError(f"token id {tid} is outside the vocabulary [0, {self.vocab_size})")
            if tid in (self.bos_token_id, self.eos_token_id) and skip_special_tokens:
                prev = tid
                continue
            piece = self.pieces[tid]
            if prev == self.bos_token_id and piece.startswith(b" "):
                piece = piece[1:]  # run.c strips the dummy-prefix space after BOS
            m = _BYTE_PIECE.match(piece)
            out += bytes([int(m.group(1), 16)]) if m else piece
            prev = tid
        return out.decode("utf-8", errors="replace")

    def __call__(self, text: str, return_tensors: str | None = None, add_bos: bool = True):
        """Minimal Hugging Face-style call: {'input_ids': ..., 'attention_mask': ...} for one text."""
        ids = self.encode(text, bos=add_bos)
        if return_tensors == "pt":
            import torch

            t = torch.tensor([ids], dtype=torch.long)
            return {"input_ids": t, "attention_mask": torch.ones_like(t)}
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}
