"""Generation under the patch: beam search, caches spatten cannot evict from, and generate(use_cache=False)."""

import warnings

import pytest
import torch

import spatten
from spatten.config import SpAttenConfig
from spatten.patch import UnsupportedModelError
from spatten.testing import random_batch, real_tokens, tiny_model

EOS = 2


def rerun_log_probability(model, prompt: torch.Tensor, continuation: torch.Tensor) -> float:
    """Sum of log-probabilities of `continuation` after `prompt` [1, L], decoded one token at a time with a fresh
    cache (greedy-forced: the same pruning the patch applies in generate)."""
    out = model(input_ids=prompt, use_cache=True)
    total = 0.0
    for token in continuation:
        total += torch.log_softmax(out.logits[0, -1].float(), -1)[token].item()
        if token == EOS:
            break
        out = model(input_ids=token.view(1, 1), cache=out.past_key_values, use_cache=True)
    return total


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_beam_search_scores_equal_per_beam_reruns(family):
    """Each returned beam's score (length_penalty 0: the sum of its log-probabilities, computed by beam search
    with the pruning state reordered with the cache) equals a rerun of that beam alone. Without the reorder the
    beams read each other's importance and evictions and the scores differ."""
    model = tiny_model(family)
    ids, mask = random_batch(model, lengths=[10, 7])
    beams = 4
    with torch.no_grad(), spatten.patch(model, SpAttenConfig(token_keep=0.3, head_keep=0.5)):
        out = model.generate(ids, attention_mask=mask, num_beams=beams, num_return_sequences=beams,
                             max_new_tokens=12, do_sample=False, length_penalty=0.0, early_stopping=True,
                             output_scores=True, return_dict_in_generate=True, pad_token_id=0)
        for index, sequence in enumerate(out.sequences):
            row = index // beams
            expected = rerun_log_probability(model, real_tokens(ids, mask, row), sequence[ids.shape[1]:])
            assert out.sequences_scores[index].item() == pytest.approx(expected, abs=1e-4), f"beam {index}"


def test_static_cache_is_a_clear_error():
    model = tiny_model("llama")
    ids, _ = random_batch(model, batch=1)
    with spatten.patch(model, SpAttenConfig(token_keep=0.5)):
        with pytest.raises(UnsupportedModelError, match="use the default DynamicCache"):
            model.generate(ids, max_new_tokens=3, do_sample=False, cache_implementation="static", pad_token_id=0)


def test_generate_without_a_cache_warns():
    model = tiny_model("gpt2")
    ids, _ = random_batch(model, batch=1)
    with spatten.patch(model, SpAttenConfig(token_keep=0.5)):
        with pytest.warns(UserWarning, match="use_cache=True"):
            model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False, use_cache=False,
                           pad_token_id=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model(input_ids=ids, use_cache=False)  # one forward without a cache is fine
            model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert not [w for w in caught if "spatten" in str(w.message)]
