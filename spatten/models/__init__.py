"""Real models for evaluation: the embedded MiniLM encoder, llama2.c checkpoints converted to Hugging Face
Llama, and a small GPT-2 trained on local text. Nothing here downloads anything."""

from spatten.models.llama2c import from_llama2c
from spatten.models.llama2c_tokenizer import Llama2cTokenizer
from spatten.models.minilm import load_encoder, minilm_dir
from spatten.models.registry import LoadedModel, check_model, load_model

__all__ = ["from_llama2c", "Llama2cTokenizer", "load_encoder", "minilm_dir", "LoadedModel", "check_model", "load_model"]
