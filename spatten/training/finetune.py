"""Fine-tuning with pruning in the loop: a sentence encoder and its linear task head trained together while
`spatten.patch` prunes, as the SpAtten paper and LTP fine-tune their pruned models.

The starting point is the project's standard classifier (spatten.training.heads): the embedded MiniLM, a linear
head fitted on its unpruned sentence embeddings (mean of the last hidden states over real tokens, L2
normalised). Pruned at keep 0.3 without retraining, that classifier loses accuracy: the mean now runs over the
surviving tokens, whose states were computed from fewer tokens. Fine-tuning encoder and head with the same
pruning active lets the model adapt to it. `finetune` reports dev accuracy at the pruning config before and
after.

    result = finetune("sst-2", SpAttenConfig(token_keep=0.3), steps=300)
    result.accuracy_before, result.accuracy_after
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spatten.config import SpAttenConfig


@dataclass
class FinetuneResult:
    """Dev accuracy at `config` before and after fine-tuning, and the training losses (one per step)."""

    task: str
    config: dict[str, Any]
    steps: int
    batch_size: int
    accuracy_before: float
    accuracy_after: float
    n_dev: int
    n_train_pool: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def sentence_features(model, tokenizer, text_a, text_b, handle, max_length: int):
    """Classifier features [N, F] as spatten.training.heads builds them (u, or [u, v, |u-v|, u*v] for pairs), from
    the pruned encoder, differentiable."""
    import torch

    def embed(texts):
        from spatten.models.embed import _output_mask

        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = _output_mask(hidden, enc["attention_mask"], handle).unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    u = embed(text_a)
    if text_b is None:
        return u
    v = embed(text_b)
    return torch.cat([u, v, (u - v).abs(), u * v], dim=1)


def accuracy(model, tokenizer, head, examples, handle, *, batch_size: int = 64, max_length: int = 128) -> float:
    """Fraction of `examples` classified correctly (eval mode, no grad); batches in length order."""
    import torch

    order = np.argsort([len(t) for t in examples.text_a], kind="stable")
    correct = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            text_b = None if examples.text_b is None else [examples.text_b[i] for i in idx]
            feats = sentence_features(model, tokenizer, [examples.text_a[i] for i in idx], text_b, handle,
                                      max_length)
            predicted = head(feats).argmax(-1)
            correct += int((predicted == torch.as_tensor([examples.labels[i] for i in idx])).sum())
    return correct / len(order)


def finetune(task: str = "sst-2", config: SpAttenConfig | None = None, *, steps: int = 300, batch_size: int = 16,
             learning_rate: float = 3e-5, head_learning_rate: float = 1e-3, head_train: int = 2000,
             train_pool: int | None = None, n_dev: int | None = None, max_length: int = 64, seed: int = 0,
             threads: int | None = 2, data_dir=None, cache_dir=None, model=None) -> FinetuneResult:
    """Fine-tune the encoder (MiniLM unless `model`, a spatten.models LoadedModel) and its task head on a GLUE
    classification task with `config` (default token_keep 0.3) applied in the loop, in train mode (the
    encoder's own dropout). Accuracy is measured on the dev set (first n_dev examples) at `config`.

    head_train: examples for the initial head (spatten.training.heads.train_head, cached); train_pool: draw the
    fine-tuning batches from the first train_pool shuffled training examples (None: all); steps of batch_size.
    The model is trained in place.
    """
    import torch

    import spatten
    from spatten.threads import torch_threads
    from spatten.eval.tasks import glue_task
    from spatten.training.heads import train_head
    from spatten.models.registry import load_model

    config = SpAttenConfig(token_keep=0.3) if config is None else config
    spec = glue_task(task)
    if spec.is_regression:
        raise ValueError(f"task {spec.name} is a regression task; finetune trains classifiers")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps} and {batch_size}")
    loaded = load_model("minilm", kind="encoder") if model is None else model
    encoder, tokenizer = loaded.model, loaded.tokenizer
    fitted = train_head(loaded, spec, n_train=head_train, seed=seed, max_length=max_length, cache_dir=cache_dir,
                        data_dir=data_dir)
    head = torch.nn.Linear(fitted.weight.shape[1], fitted.weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(fitted.weight))
        head.bias.copy_(torch.as_tensor(fitted.bias))
    dev = spec.read("dev", data_dir).head(n_dev)
    train = spec.read("train", data_dir)
    rng = np.random.default_rng(seed)
    pool = rng.permutation(len(train))[:train_pool]
    start = time.perf_counter()
    losses = []
    with torch_threads(threads), spatten.patch(encoder, config) as handle:
        before = accuracy(encoder, tokenizer, head, dev, handle, max_length=max_length)
        optimizer = torch.optim.AdamW([{"params": encoder.parameters(), "lr": learning_rate},
                                       {"params": head.parameters(), "lr": head_learning_rate}])
        torch.manual_seed(seed)  # dropout masks
        for _ in range(steps):
            idx = rng.choice(pool, size=min(batch_size, len(pool)), replace=False)
            encoder.train()
            text_b = None if train.text_b is None else [train.text_b[i] for i in idx]
            feats = sentence_features(encoder, tokenizer, [train.text_a[i] for i in idx], text_b, handle,
                                      max_length)
            loss = torch.nn.functional.cross_entropy(head(feats), torch.as_tensor([train.labels[i] for i in idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        after = accuracy(encoder, tokenizer, head, dev, handle, max_length=max_length)
    encoder.eval()
    return FinetuneResult(spec.name, config.to_dict(), steps, batch_size, before, after, len(dev), len(pool),
                          time.perf_counter() - start, losses)
