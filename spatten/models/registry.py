"""Resolve a model name or a local path to a loaded model, its tokenizer and its kind (encoder / decoder).

Names: "minilm" (embedded all-MiniLM-L6-v2 encoder), "stories260K" (llama2.c tiny Llama from
$SPATTEN_DATA_DIR/models/stories260K-llama2c). Paths: a Hugging Face directory (config.json), or a directory
holding a llama2.c checkpoint (*.bin) and its tokenizer (tok*.bin). Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ENCODER = "minilm"
DEFAULT_DECODER = "stories260K"
STORIES_SUBDIR = "models/stories260K-llama2c"


@dataclass
class LoadedModel:
    name: str
    kind: str  # "encoder" or "decoder"
    model: Any
    tokenizer: Any
    path: Path | None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` with the model's usual leading special token (BOS / [CLS])."""
        if hasattr(self.tokenizer, "encode") and hasattr(self.tokenizer, "pieces"):  # llama2.c tokenizer
            return self.tokenizer.encode(text, bos=True)
        ids = self.tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"]
        if self.kind == "decoder" and (not ids or ids[0] != self.tokenizer.bos_token_id) \
                and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id] + ids
        return list(ids)


def _llama2c_files(folder: Path) -> tuple[Path, Path] | None:
    tokenizers = sorted(folder.glob("tok*.bin"))
    models = sorted(p for p in folder.glob("*.bin") if p not in tokenizers)
    if len(models) == 1 and len(tokenizers) == 1:
        return models[0], tokenizers[0]
    return None


def _is_decoder_config(config: dict) -> bool:
    archs = " ".join(config.get("architectures") or [])
    return bool(config.get("is_decoder")) or "CausalLM" in archs or "LMHead" in archs or \
        config.get("model_type") in {"gpt2", "llama", "mistral", "qwen2", "opt", "gpt_neox"}


def _model_source(spec, data_dir) -> tuple[str, str, Path | None]:
    """(what, kind, folder) of a model spec without loading weights: what is "minilm", "stories260K",
    "hf" (a Hugging Face directory) or "llama2c" (a checkpoint directory). FileNotFoundError names a bad spec."""
    from spatten.data import data_dir as resolve_data_dir

    spec_s = str(spec)
    if spec_s.lower() in ("minilm", "all-minilm-l6-v2"):
        return "minilm", "encoder", None
    if spec_s.lower() in ("stories260k", "stories260k-llama2c"):
        folder = resolve_data_dir(data_dir) / STORIES_SUBDIR
        if not folder.is_dir() or _llama2c_files(folder) is None:
            raise FileNotFoundError(f"stories260K: expected stories260K.bin and tok512.bin in {folder}")
        return "stories260K", "decoder", folder
    path = Path(spec_s).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model {spec_s!r} is neither a known name (minilm, stories260K) nor an "
                                "existing path")
    if path.is_file() and path.suffix == ".bin":
        path = path.parent
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        return "hf", "decoder" if _is_decoder_config(config) else "encoder", path
    if _llama2c_files(path) is not None:
        return "llama2c", "decoder", path
    raise FileNotFoundError(f"{path} holds neither a Hugging Face model (config.json) nor a llama2.c "
                            "checkpoint (*.bin + tok*.bin)")


def check_model(spec: str | os.PathLike | None = None, kind: str | None = None,
                data_dir: str | os.PathLike | None = None) -> str:
    """The kind ("encoder"/"decoder") of the model `load_model(spec, kind)` would load, found without loading
    it; FileNotFoundError or ValueError name a spec that load_model would reject."""
    if kind not in (None, "encoder", "decoder"):
        raise ValueError(f"kind must be 'encoder' or 'decoder', got {kind!r}")
    if spec is None:
        spec = DEFAULT_DECODER if kind == "decoder" else DEFAULT_ENCODER
    found = _model_source(spec, data_dir)[1]
    if kind is not None and found != kind:
        raise ValueError(f"model {str(spec)!r} is a {found} model; this evaluation needs a {kind} model")
    return found


def load_model(spec: str | os.PathLike | None = None, kind: str | None = None,
               data_dir: str | os.PathLike | None = None) -> LoadedModel:
    """Load by name or path. `kind` ("encoder"/"decoder") picks the default when spec is None and checks it."""
    from spatten.models.llama2c import from_llama2c
    from spatten.models.minilm import load_encoder, minilm_dir

    check_model(spec, kind, data_dir)
    if spec is None:
        spec = DEFAULT_DECODER if kind == "decoder" else DEFAULT_ENCODER
    what, found, path = _model_source(spec, data_dir)
    if what == "minilm":
        model, tok = load_encoder(None)
        return LoadedModel("all-MiniLM-L6-v2", "encoder", model, tok, minilm_dir())
    if what in ("stories260K", "llama2c"):
        files = _llama2c_files(path)
        model, tok = from_llama2c(*files)
        return LoadedModel("stories260K" if what == "stories260K" else files[0].stem, "decoder", model, tok, path)
    if found == "decoder":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return LoadedModel(path.name, "decoder", model, tok, path)
    model, tok = load_encoder(path)
    return LoadedModel(path.name, "encoder", model, tok, path)
