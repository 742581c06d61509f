"""`model(ids, labels=ids)` on a decoder with token pruning: either the causal loss (what token-by-token decoding
through the cache computes) or a clear warning that it is not."""

import warnings

import pytest
import torch

import spatten
from spatten.config import SpAttenConfig
from spatten.eval.lm import Window, decoded_logits
from spatten.patch.eviction import SpAttenCausalityWarning
from spatten.testing import random_batch, tiny_model


def token_by_token_loss(model, ids: torch.Tensor) -> float:
    """Mean next-token loss scoring each token from a 1-token prefill then decoding through the cache."""
    window = Window(tuple(ids[0].tolist()), 1)
    logits = decoded_logits(model, window)
    return float(torch.nn.functional.cross_entropy(logits, ids[0, 1:]))


@pytest.fixture(scope="module")
def llama():
    model = tiny_model("llama", layers=4, heads=4)
    ids, _ = random_batch(model, batch=1, length=24)
    return model, ids


def test_pruning_inside_the_forward_warns_that_it_saw_the_future(llama):
    model, ids = llama
    with spatten.patch(model, SpAttenConfig(token_keep=0.4)):
        with pytest.warns(SpAttenCausalityWarning, match="sees the future"), torch.no_grad():
            pruned = float(model(input_ids=ids, labels=ids).loss)
        causal = token_by_token_loss(model, ids)
    assert abs(pruned - causal) > 1e-3  # the warning is about a real difference


def test_pruning_after_the_prefill_warns_that_the_forward_is_dense(llama):
    model, ids = llama
    with torch.no_grad():
        dense = float(model(input_ids=ids, labels=ids).loss)
    with spatten.patch(model, SpAttenConfig(token_keep=0.4, prefill_pruning="after")):
        with pytest.warns(SpAttenCausalityWarning, match="unpruned model"), torch.no_grad():
            loss = float(model(input_ids=ids, labels=ids).loss)
    assert loss == pytest.approx(dense, abs=1e-5)


@pytest.mark.parametrize("cfg", [SpAttenConfig(), SpAttenConfig(v_bits=8), SpAttenConfig(recent_window=4,
                                                                                     importance_norm="mean")])
def test_without_token_pruning_the_loss_is_causal_and_nothing_warns(llama, cfg):
    model, ids = llama
    with spatten.patch(model, cfg), warnings.catch_warnings():
        warnings.simplefilter("error", SpAttenCausalityWarning)
        with torch.no_grad():
            loss = float(model(input_ids=ids, labels=ids).loss)
        causal = token_by_token_loss(model, ids)
    assert loss == pytest.approx(causal, abs=1e-4)


def test_one_token_prefill_then_decoding_is_causal_and_silent(llama):
    model, ids = llama
    with spatten.patch(model, SpAttenConfig(token_keep=0.4)), warnings.catch_warnings():
        warnings.simplefilter("error", SpAttenCausalityWarning)
        token_by_token_loss(model, ids)  # a 1-token prefill sees no future: no warning
