"""spatten.ops.local_value_attention against the reference, hand-computed cases and bad inputs."""

import pytest
import torch

from spatten import ops, ops_ref


def random_inputs(b, h, lq, lk, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(b, h, lq, lk, generator=gen) * 2, dim=-1)
    return probs, torch.randn(b, h, lk, d, generator=gen)


def assert_matches_reference(probs, v, k):
    out, kept, fetched = ops.local_value_attention(probs, v, k)
    ref_out, ref_kept, ref_fetched = ops_ref.local_value_attention(probs, v, k)
    assert out.dtype == torch.float32 and kept.dtype == fetched.dtype == torch.int64
    torch.testing.assert_close(out, ref_out)
    assert torch.equal(kept, ref_kept) and torch.equal(fetched, ref_fetched)


def test_hand_computed():
    probs = torch.tensor([[[[0.1, 0.6, 0.3], [0.5, 0.4, 0.1]]]])  # [1, 1, 2, 3]
    v = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]]])  # [1, 1, 3, 2]
    out, kept, fetched = ops.local_value_attention(probs, v, 2)
    assert kept.tolist() == [[[[1, 2], [0, 1]]]]
    torch.testing.assert_close(out, torch.tensor([[[[0.6, 1.2], [0.5, 0.4]]]]))  # no renormalisation
    assert fetched.tolist() == [[3]]  # rows {1, 2} and {0, 1}: three distinct V rows


@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 4), (1, 12, 1, 300, 64), (2, 2, 16, 600, 8)])
def test_matches_reference(shape):
    probs, v = random_inputs(*shape)
    lk = shape[3]
    for k in sorted({0, 1, lk // 4, lk - 1, lk}):
        assert_matches_reference(probs, v, k)


def test_k_equal_to_lk_is_dense_attention_and_k_zero_is_nothing():
    probs, v = random_inputs(2, 3, 4, 9, 5)
    out, _, fetched = ops.local_value_attention(probs, v, 9)
    torch.testing.assert_close(out, probs @ v)
    assert (fetched == 9).all()
    out, kept, fetched = ops.local_value_attention(probs, v, 0)
    assert (out == 0).all() and kept.shape == (2, 3, 4, 0) and (fetched == 0).all()


def test_ties_all_equal_rows_and_zeros():
    v = torch.randn(1, 2, 6, 3)
    probs = torch.full((1, 2, 3, 6), 1 / 6)
    probs[0, 1] = 0.0
    probs[0, 1, 2, 4] = 1.0
    out, kept, fetched = ops.local_value_attention(probs, v, 2)
    assert kept[0, 0].tolist() == [[0, 1]] * 3  # ties go to the lower positions
    assert kept[0, 1].tolist() == [[0, 1], [0, 1], [0, 4]]
    assert fetched.tolist() == [[2, 3]]
    assert_matches_reference(probs, v, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_and_non_contiguous(dtype):
    probs, v = random_inputs(2, 3, 8, 20, 6, seed=4)
    probs_t = probs.transpose(2, 3).contiguous().transpose(2, 3).to(dtype)  # non-contiguous
    v_t = v.transpose(0, 1).contiguous().transpose(0, 1).to(dtype)
    assert not probs_t.is_contiguous() and not v_t.is_contiguous()
    assert_matches_reference(probs_t, v_t, 5)


def test_extreme_magnitudes():
    probs, v = random_inputs(1, 2, 3, 10, 4, seed=5)
    v = v * 1e30
    probs[0, 0, 0] = torch.tensor([1e-40] * 10)
    assert_matches_reference(probs, v, 3)


def test_bad_inputs():
    probs, v = random_inputs(2, 3, 4, 5, 6)
    for impl in (ops, ops_ref):
        with pytest.raises(ValueError, match=r"local_value_attention: k must be in \[0, 5\]"):
            impl.local_value_attention(probs, v, 6)
        with pytest.raises(ValueError, match="local_value_attention: k must be in"):
            impl.local_value_attention(probs, v, -1)
        with pytest.raises(ValueError, match="local_value_attention: v must have shape"):
            impl.local_value_attention(probs, v[:, :, :4], 2)
        with pytest.raises(TypeError, match="local_value_attention: probs must be a floating dtype"):
            impl.local_value_attention(probs.int(), v, 2)
        with pytest.raises(ValueError, match=r"probs must be \[B, H, Lq, Lk\]"):
            impl.local_value_attention(probs[0], v, 2)
        bad = probs.clone()
        bad[1, 2, 3, 0] = float("nan")
        with pytest.raises(ValueError, match="local_value_attention: probs contain NaN"):
            impl.local_value_attention(bad, v, 2)


def test_opcheck():
    probs, v = random_inputs(2, 3, 4, 9, 5)
    for k in (0, 3, 9):
        torch.library.opcheck(torch.ops.spatten.local_value_attention.default, (probs, v, k))
