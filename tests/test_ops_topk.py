import pytest
import torch

from spatten import ops, ops_ref


@pytest.mark.parametrize("shape,k", [((5,), 2), ((3, 4, 128), 17), ((2, 1024), 1024), ((7, 33), 0)])
def test_topk_matches_reference(shape, k):
    scores = torch.randn(shape)
    torch.testing.assert_close(ops.topk_indices(scores, k), ops_ref.topk_indices(scores, k))
