"""Task heads for GLUE classification on top of a frozen sentence encoder.

The encoder stays frozen; a linear softmax classifier is fitted on its embeddings of a training subset
(single sentence: u; pair: [u, v, |u - v|, u * v], the Sentence-BERT classification features). This takes a
minute or two on a CPU and is cached outside the repository (default ~/.cache/spatten, or $SPATTEN_CACHE_DIR),
keyed by the model files, the task and the training budget.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatten.atomic import atomic_write_bytes

HEAD_RECIPE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("SPATTEN_CACHE_DIR", Path.home() / ".cache" / "spatten")).expanduser()


def pair_features(u: np.ndarray, v: np.ndarray | None) -> np.ndarray:
    """u: [N, D] (and v: [N, D] for pair tasks) -> [N, D] or [N, 4D] features."""
    if v is None:
        return u
    if u.shape != v.shape:
        raise ValueError(f"pair embeddings differ in shape: {u.shape} vs {v.shape}")
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


@dataclass
class TaskHead:
    """A linear classifier: logits = features @ weight.T + bias. weight: [num_labels, F]."""

    task: str
    weight: np.ndarray
    bias: np.ndarray
    train_accuracy: float
    n_train: int

    def predict(self, u: np.ndarray, v: np.ndarray | None = None) -> np.ndarray:
        feats = pair_features(u, v)
        if feats.shape[1] != self.weight.shape[1]:
            raise ValueError(f"head for {self.task} expects {self.weight.shape[1]} features, got {feats.shape[1]}")
        return np.argmax(feats @ self.weight.T + self.bias, axis=1)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, weight=self.weight, bias=self.bias,
                 meta=np.array(json.dumps({"task": self.task, "train_accuracy": self.train_accuracy,
                                           "n_train": self.n_train})))
        return buf.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> TaskHead:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(meta["task"], z["weight"], z["bias"], meta["train_accuracy"], meta["n_train"])


def fit_linear_head(features: np.ndarray, labels: np.ndarray, num_labels: int, *, epochs: int = 300,
                    weight_decay: float = 1e-4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Multinomial logistic regression by full-batch Adam; returns (weight, bias, training accuracy)."""
    import torch

    if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
        raise ValueError(f"need [N, F] features with N labels, got {features.shape} and {len(labels)} labels")
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    xs = (x - mean) / std  # standardise for a well-conditioned fit, folded back into the weights below
    lin = torch.nn.Linear(x.shape[1], num_labels)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.01)
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=0.05, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xs), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        w = lin.weight / std
        b = lin.bias - w @ mean
        acc = float(((x @ w.T + b).argmax(1) == y).float().mean())
    return w.numpy(), b.numpy(), acc


def _model_fingerprint(model_path: Path | None, model_name: str) -> str:
    h = hashlib.sha256(model_name.encode())
    if model_path is not None:
        for f in sorted(Path(model_path).glob("*")):
            if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".txt"):
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}".encode())
                if f.suffix == ".json":
                    h.update(f.read_bytes())
    return h.hexdigest()[:16]


def train_head(loaded, task, *, n_train: int = 2000, seed: int = 0, max_length: int = 128, batch_size: int = 32,
               cache_dir: str | os.PathLike | None = None, data_dir=None, refresh: bool = False) -> TaskHead:
    """Fit (or load from cache) the head of a GLUE classification task on the unpatched encoder `loaded`.

    task: a spatten.eval.tasks.GlueTask (anything with name, is_regression, is_pair, num_labels, read()).

    n_train: training examples, drawn at random (seed) from the task's train split.
    """
    from spatten.models.embed import embed_sentences
    from spatten.threads import torch_threads

    if task.is_regression:
        raise ValueError(f"task {task.name} is a regression task; it is scored without a trained head")
    if n_train < 2:
        raise ValueError(f"n_train must be at least 2, got {n_train}")
    key = hashlib.sha256(json.dumps([HEAD_RECIPE_VERSION, _model_fingerprint(loaded.path, loaded.name), task.name,
                                     n_train, seed, max_length]).encode()).hexdigest()[:20]
    path = Path(cache_dir or default_cache_dir()) / "heads" / f"{task.name}-{key}.npz"
    if path.is_file() and not refresh:
        return TaskHead.from_file(path)
    train = task.read("train", data_dir)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train), size=min(n_train, len(train)), replace=False))
    with torch_threads(1):
        u = embed_sentences(loaded.model, loaded.tokenizer, [train.text_a[i] for i in pick],
                            batch_size=batch_size, max_length=max_length)
        v = None
        if task.is_pair:
            v = embed_sentences(loaded.model, loaded.tokenizer, [train.text_b[i] for i in pick],
                                batch_size=batch_size, max_length=max_length)
        labels = np.asarray([train.labels[i] for i in pick])
        w, b, acc = fit_linear_head(pair_features(u, v), labels, task.num_labels, seed=seed)
    head = TaskHead(task.name, w, b, acc, len(pick))
    atomic_write_bytes(path, head.to_bytes())
    return head
