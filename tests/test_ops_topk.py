"""spatten.ops.topk_indices against its PyTorch reference, hand-computed cases and bad inputs."""

import pytest
import torch

from spatten import ops, ops_ref

SIZES = [1, 2, 7, 128, 511, 512, 513, 1024, 4099]  # around the nth_element / radix-select switch at 512


def adversarial_rows(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Rows [4, n] that stress selection: ties, all-equal, signed zeros, extreme and subnormal magnitudes."""
    extreme = torch.randn(4, n, generator=generator) * 1e38
    extreme[:, ::7] = float("inf")
    extreme[:, 1::7] = -float("inf")
    extreme[:, 2::5] = 1e-45
    signed_zeros = torch.zeros(4, n)
    signed_zeros[:, ::2] = -0.0
    return {
        "randn": torch.randn(4, n, generator=generator),
        "few_values": torch.randint(-3, 3, (4, n), generator=generator).float(),
        "all_equal": torch.full((4, n), 2.5),
        "signed_zeros": signed_zeros,
        "extreme": extreme,
        # Same high bits, differing only in the low mantissa bits: exercises every radix level.
        "close": 1.0 + torch.randint(0, 64, (4, n), generator=generator).float() * 2.0**-23,
    }


@pytest.mark.parametrize("n", SIZES)
def test_matches_reference_on_adversarial_rows(n):
    gen = torch.Generator().manual_seed(n)
    for name, rows in adversarial_rows(n, gen).items():
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            got = ops.topk_indices(rows, k)
            assert torch.equal(got, ops_ref.topk_indices(rows, k)), f"{name}, n={n}, k={k}"


def test_hand_computed_cases():
    assert ops.topk_indices(torch.tensor([0.1, 0.7, 0.3, 0.9, 0.05]), 2).tolist() == [1, 3]
    # Ties at the k-th value go to the lower positions, in position order.
    assert ops.topk_indices(torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0]), 2).tolist() == [1, 2]
    assert ops.topk_indices(torch.tensor([5.0, 5.0, 5.0]), 1).tolist() == [0]
    assert ops.topk_indices(torch.tensor([-0.0, 0.0, -1.0]), 1).tolist() == [0]
    assert ops.topk_indices(torch.tensor([3.0, 1.0, 2.0]), 3).tolist() == [0, 1, 2]
    assert ops.topk_indices(torch.tensor([3.0, 1.0, 2.0]), 0).shape == (0,)


def test_selected_set_is_the_largest_values():
    """Independent of the reference: kept values dominate dropped ones and positions ascend."""
    scores = torch.randn(64, 2048, generator=torch.Generator().manual_seed(1))
    kept = ops.topk_indices(scores, 300)
    assert (kept.diff(dim=-1) > 0).all()
    dropped = torch.ones_like(scores, dtype=torch.bool).scatter_(-1, kept, False)
    kept_min = scores.gather(-1, kept).amin(-1)
    dropped_max = scores.masked_fill(~dropped, -float("inf")).amax(-1)
    assert (kept_min >= dropped_max).all()
    torch.testing.assert_close(scores.gather(-1, kept).sum(-1), torch.topk(scores, 300).values.sum(-1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_inputs(dtype):
    scores = torch.randn(3, 12, 200, generator=torch.Generator().manual_seed(2)).to(dtype)
    assert torch.equal(ops.topk_indices(scores, 50), ops_ref.topk_indices(scores, 50))


def test_non_contiguous_and_batched_shapes():
    base = torch.randn(6, 300, 5, generator=torch.Generator().manual_seed(3))
    scores = base.transpose(1, 2)  # [6, 5, 300], non-contiguous last dim
    assert not scores.is_contiguous()
    assert torch.equal(ops.topk_indices(scores, 77), ops_ref.topk_indices(scores, 77))
    assert ops.topk_indices(torch.randn(2, 0, 9), 4).shape == (2, 0, 4)


def test_many_rows_in_parallel_match_row_by_row():
    scores = torch.randn(12 * 128, 1024, generator=torch.Generator().manual_seed(4))
    batched = ops.topk_indices(scores, 256)
    assert torch.equal(batched[777], ops.topk_indices(scores[777], 256))
    assert torch.equal(batched, ops_ref.topk_indices(scores, 256))


@pytest.mark.parametrize("k", [-1, 11])
def test_k_out_of_range_raises(k):
    with pytest.raises(ValueError, match=r"topk_indices: k must be in \[0, 10\]"):
        ops.topk_indices(torch.randn(3, 10), k)


@pytest.mark.parametrize("n,k", [(10, 0), (10, 3), (10, 10), (4000, 1000)])
def test_nan_raises_for_every_k(n, k):
    scores = torch.randn(5, n)
    scores[3, n // 2] = float("nan")
    with pytest.raises(ValueError, match="topk_indices: scores contain NaN"):
        ops.topk_indices(scores, k)


def test_integer_scores_raise_type_error():
    with pytest.raises(TypeError, match="topk_indices: scores must be a floating dtype"):
        ops.topk_indices(torch.arange(10), 3)


def test_scalar_raises():
    with pytest.raises(ValueError, match="at least 1 dimension"):
        ops.topk_indices(torch.tensor(1.0), 0)


def test_reference_raises_the_same_errors():
    with pytest.raises(ValueError, match="k must be in"):
        ops_ref.topk_indices(torch.randn(3, 10), 11)
    with pytest.raises(ValueError, match="NaN"):
        ops_ref.topk_indices(torch.tensor([1.0, float("nan")]), 1)
    with pytest.raises(TypeError, match="floating"):
        ops_ref.topk_indices(torch.arange(4), 1)


def test_opcheck():
    for args in [(torch.randn(3, 4, 50), 7), (torch.randn(600), 600), (torch.randn(2, 5).half(), 0)]:
        torch.library.opcheck(torch.ops.spatten.topk_indices.default, args)
