"""Training with pruning in the loop: gradients reach every attention projection, in train mode with dropout."""

import pytest
import torch

import spatten
from spatten.config import SpAttenConfig
from spatten.patch import core
from spatten.testing import random_batch, tiny_model

CONFIG = SpAttenConfig(token_keep=0.5, value_keep=0.5, k_bits=(6, 4))
PROJECTIONS = ("query", "key", "value", "attention.output.dense", "q_proj", "k_proj", "v_proj", "o_proj")


def attention_projections(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters()
            if name.endswith(".weight") and any(f".{proj}." in name for proj in PROJECTIONS)}


def batch_and_loss(model, family):
    ids, mask = random_batch(model, lengths=[16, 12, 9, 16], seed=3)
    if family == "bert":
        labels = torch.tensor([0, 1, 1, 0])
        return lambda: model(input_ids=ids, attention_mask=mask, labels=labels).loss
    labels = ids.masked_fill(mask == 0, -100)
    return lambda: model(input_ids=ids, attention_mask=mask, labels=labels).loss


def eval_loss(model, loss_of) -> float:
    """The loss in eval mode (no dropout), then back to train mode."""
    model.eval()
    with torch.no_grad():
        loss = loss_of().item()
    model.train()
    return loss


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_fine_tuning_with_pruning_reaches_every_projection_and_lowers_the_loss(family):
    dropout = (dict(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1) if family == "bert"
               else dict(attention_dropout=0.1))
    model = tiny_model(family, **dropout).train()
    projections = attention_projections(model)
    assert len(projections) == 4 * model.config.num_hidden_layers
    loss_of = batch_and_loss(model, family)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    with spatten.patch(model, CONFIG) as handle:
        before = eval_loss(model, loss_of)
        for step in range(20):
            optimizer.zero_grad()
            loss = loss_of()
            loss.backward()
            if step == 0:
                missing = [name for name, p in projections.items() if p.grad is None or not p.grad.abs().sum() > 0]
                assert not missing, f"no gradient reached {missing}"
            optimizer.step()
            losses.append(loss.item())
        after = eval_loss(model, loss_of)
    kept_last_layer = (handle.last_kept_positions[-1] >= 0).sum(-1)
    assert (kept_last_layer < torch.tensor([16, 12, 9, 16])).all()  # token pruning acted in the loop
    # Judged without dropout (pruning still on): a 4-example batch's dropout-noisy training loss is no measure.
    assert after < 0.7 * before, (before, after, losses)


def test_token_importance_reads_the_probabilities_before_dropout():
    """Each valid query row's probabilities sum to 1 before dropout: importance summed over rows and heads is
    then exactly rows x heads, which dropped-out probabilities (zeros, and 1/(1-p) scaling) would not give."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=gen) for _ in range(3))
    valid = torch.ones(2, 7, dtype=torch.bool)
    torch.manual_seed(0)
    result = core.attend(q, k, v, None, 0.3, SpAttenConfig(token_keep=0.5, value_keep=0.5),
                         need_importance=True, query_valid=valid, dropout=0.5)
    torch.testing.assert_close(result.token_importance.sum(-1), torch.full((2,), 3.0 * 7))
