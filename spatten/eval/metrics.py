"""GLUE's official metrics and the language-model comparison metrics.

Classification metrics take integer predictions and labels; F1 and Matthews follow GLUE (binary F1 of class 1,
Matthews correlation over the confusion matrix). Correlations come from scipy.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np


def _as_pair(predictions: Sequence, labels: Sequence, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions, dtype=dtype), np.asarray(labels, dtype=dtype)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"predictions and labels must be 1-D and equally long, got shapes {p.shape} and {y.shape}")
    if p.size == 0:
        raise ValueError("no predictions to score")
    return p, y


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    p, y = _as_pair(predictions, labels)
    return float(np.mean(p == y))


def f1(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Binary F1 of the positive class (1), as GLUE reports for MRPC and QQP; 0 when undefined."""
    p, y = _as_pair(predictions, labels)
    tp = float(np.sum((p == 1) & (y == 1)))
    fp = float(np.sum((p == 1) & (y != 1)))
    fn = float(np.sum((p != 1) & (y == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004); 0 when a marginal is constant (CoLA's rule)."""
    p, y = _as_pair(predictions, labels)
    classes = np.union1d(p, y)
    cm = np.array([[np.sum((y == a) & (p == b)) for b in classes] for a in classes], dtype=np.float64)
    t, pk = cm.sum(axis=1), cm.sum(axis=0)
    n, c = cm.sum(), np.trace(cm)
    denom = math.sqrt((n * n - pk @ pk) * (n * n - t @ t))
    return 0.0 if denom == 0 else float((c * n - t @ pk) / denom)


def pearson(predictions: Sequence[float], labels: Sequence[float]) -> float:
    from scipy import stats  # imported on use: scipy.stats costs a second at import

    p, y = _as_pair(predictions, labels, np.float64)
    return float(stats.pearsonr(p, y).statistic)


def spearman(predictions: Sequence[float], labels: Sequence[float]) -> float:
    from scipy import stats

    p, y = _as_pair(predictions, labels, np.float64)
    return float(stats.spearmanr(p, y).statistic)


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson, "spearman": spearman,
}


# ---- language models -------------------------------------------------------------------------------------
def perplexity(total_nll: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood in nats)."""
    if n_tokens <= 0:
        raise ValueError(f"perplexity needs at least one scored token, got {n_tokens}")
    return float(math.exp(total_nll / n_tokens))


def kl_and_agreement(ref_logits, test_logits) -> tuple[float, float]:
    """Mean KL(ref || test) in nats and top-1 agreement over positions.

    ref_logits, test_logits: [N, V] next-token logits of the reference (unpruned) and the tested model.
    """
    import torch

    ref, test = torch.as_tensor(ref_logits, dtype=torch.float64), torch.as_tensor(test_logits, dtype=torch.float64)
    if ref.shape != test.shape or ref.ndim != 2 or ref.shape[0] == 0:
        raise ValueError(f"logits must be equal non-empty [N, V] tensors, got {tuple(ref.shape)} and "
                         f"{tuple(test.shape)}")
    ref_lp, test_lp = torch.log_softmax(ref, -1), torch.log_softmax(test, -1)
    kl = torch.sum(ref_lp.exp() * (ref_lp - test_lp), dim=-1).mean().item()
    agree = (ref.argmax(-1) == test.argmax(-1)).double().mean().item()
    return float(kl), float(agree)
