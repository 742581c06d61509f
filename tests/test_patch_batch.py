"""Batch invariance: a sequence's pruning and outputs never depend on its batch mates.

Every family runs a padded batch (rows of different real lengths) and then each row alone, unpadded: the
positions (encoders) or KV slots (decoders) kept at every layer are the same, and so are the outputs (1e-5),
for a forward and, for decoders, for greedy generation.
"""

import pytest
import torch

import spatten
from spatten.config import SpAttenConfig
from spatten.testing import DECODER_FAMILIES, FAMILIES, padding_offset, random_batch, real_tokens, tiny_model

LENGTHS = [16, 11, 6]
CONFIGS = {
    "tokens": SpAttenConfig(token_keep=0.4),
    "all": SpAttenConfig(token_keep=0.5, head_keep=0.5, value_keep=0.5, k_bits=(4, 4), v_bits=8,
                         refetch_threshold=0.3),
}


def forward(model, ids, mask):
    """Logits; decoders get position ids that start at each row's first real token (as generate() does)."""
    kwargs = {}
    if model.config.model_type in DECODER_FAMILIES:
        kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask, **kwargs).logits


def kept_per_layer(handle, row: int, offset: int) -> list[torch.Tensor]:
    """Row `row`'s kept positions per layer, sorted, shifted to its unpadded numbering."""
    kept = [layer[row][layer[row] >= 0] - offset for layer in handle.last_kept_positions]
    return [k.sort().values for k in kept]


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("family", FAMILIES)
def test_each_row_of_a_padded_batch_is_pruned_as_if_alone(family, config):
    model = tiny_model(family)
    ids, mask = random_batch(model, lengths=LENGTHS)
    decoder = family in DECODER_FAMILIES
    with torch.no_grad(), spatten.patch(model, CONFIGS[config]) as handle:
        batched = forward(model, ids, mask)
        batched_kept = [kept_per_layer(handle, row, padding_offset(mask, row)) for row in range(len(LENGTHS))]
        pruned_somewhere = False
        for row, real in enumerate(LENGTHS):
            alone_ids = real_tokens(ids, mask, row)
            alone = forward(model, alone_ids, torch.ones_like(alone_ids))
            alone_kept = kept_per_layer(handle, 0, 0)
            for layer, (got, expected) in enumerate(zip(batched_kept[row], alone_kept)):
                assert torch.equal(got, expected), f"row {row}, layer {layer}"
            pruned_somewhere |= len(alone_kept[-1]) < real
            got = batched[row][mask[row].bool()] if decoder else batched[row]
            torch.testing.assert_close(got, alone[0], atol=1e-5, rtol=0, msg=f"row {row}")
    assert pruned_somewhere


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_generate_on_a_padded_batch_equals_each_row_alone(family):
    model = tiny_model(family)
    ids, mask = random_batch(model, lengths=LENGTHS)
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, output_scores=True,
                  return_dict_in_generate=True, pad_token_id=0)
    with torch.no_grad(), spatten.patch(model, CONFIGS["all"]):
        batched = model.generate(ids, attention_mask=mask, **kwargs)
        for row in range(len(LENGTHS)):
            alone_ids = real_tokens(ids, mask, row)
            alone = model.generate(alone_ids, attention_mask=torch.ones_like(alone_ids), **kwargs)
            assert torch.equal(batched.sequences[row, ids.shape[1]:], alone.sequences[0, alone_ids.shape[1]:])
            for step, (got, expected) in enumerate(zip(batched.scores, alone.scores)):
                torch.testing.assert_close(got[row], expected[0], atol=1e-5, rtol=0, msg=f"row {row} step {step}")


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_unpatched_model_is_batch_invariant_too(family):
    """The premise of the tests above: the unpatched model itself gives each row the same outputs alone."""
    model = tiny_model(family)
    ids, mask = random_batch(model, lengths=LENGTHS)
    with torch.no_grad():
        batched = forward(model, ids, mask)
        for row in range(len(LENGTHS)):
            alone_ids = real_tokens(ids, mask, row)
            alone = forward(model, alone_ids, torch.ones_like(alone_ids))
            got = batched[row][mask[row].bool()] if family in DECODER_FAMILIES else batched[row]
            torch.testing.assert_close(got, alone[0], atol=1e-5, rtol=0)
