"""torch.compile(model) under the patch prunes as in eager (the pruning bookkeeping runs behind graph breaks)."""

import pytest
import torch

import spatten
from spatten.config import SpAttenConfig
from spatten.testing import random_batch, tiny_model

CONFIG = SpAttenConfig(token_keep=0.5, head_keep=0.5, value_keep=0.5, k_bits=(4, 4), v_bits=8)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_compiled_model_equals_the_eager_patched_model(family):
    torch._dynamo.reset()
    model = tiny_model(family)
    ids, mask = random_batch(model, lengths=[12, 9])
    with torch.no_grad():
        unpatched = model(input_ids=ids, attention_mask=mask).logits
        with spatten.patch(model, CONFIG) as handle:
            eager = model(input_ids=ids, attention_mask=mask).logits
            eager_kept = handle.last_kept_positions
            compiled = torch.compile(model)(input_ids=ids, attention_mask=mask).logits
            compiled_kept = handle.last_kept_positions
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(compiled_kept, eager_kept)) and len(compiled_kept) == 4
    assert (compiled - unpatched).abs().max() > 1e-2  # pruning acted (it used to be silently off when compiled)
