"""spatten.ops.token_importance and head_importance against references, hand-computed cases and bad inputs."""

import pytest
import torch

from spatten import ops, ops_ref


def random_probs(b, h, lq, lk, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, h, lq, lk, generator=gen), dim=-1)


def random_mask(shape, seed, p_true=0.7):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p_true


# ---------------------------------------------------------------- token importance


def test_token_importance_hand_computed():
    # One batch, two heads, two queries, three keys.
    probs = torch.tensor([[[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], [[1.0, 0.0, 0.0], [0.3, 0.3, 0.4]]]])
    assert ops.token_importance(probs)[0].tolist() == pytest.approx([1.9, 0.75, 1.35])
    query_mask = torch.tensor([[True, False]])
    key_mask = torch.tensor([[True, True, False]])
    acc = torch.tensor([[10.0, 20.0, 30.0]])
    got = ops.token_importance(probs, query_mask, key_mask, acc)
    assert got[0].tolist() == pytest.approx([11.5, 20.25, 30.0])


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 12, 128, 128), (3, 2, 1, 700), (2, 4, 33, 513)])
def test_token_importance_matches_reference(shape):
    b, _, lq, lk = shape
    probs = random_probs(*shape)
    qm, km = random_mask((b, lq), 1), random_mask((b, lk), 2)
    acc = torch.randn(b, lk, generator=torch.Generator().manual_seed(3))
    for args in [(probs,), (probs, qm), (probs, None, km), (probs, qm, km, acc), (probs, None, None, acc)]:
        torch.testing.assert_close(ops.token_importance(*args), ops_ref.token_importance(*args))


def test_token_importance_ignores_garbage_in_masked_rows():
    probs = random_probs(2, 3, 4, 6)
    qm = torch.tensor([[True, False, True, True], [False, False, False, False]])
    poisoned = probs.clone()
    poisoned[:, :, 1] = float("nan")  # padding query row of batch 0
    poisoned[1] = float("inf")  # batch 1 is fully masked
    got = ops.token_importance(poisoned, qm)
    torch.testing.assert_close(got, ops_ref.token_importance(probs, qm))
    assert (got[1] == 0).all()


def test_token_importance_fully_masked_keys_keep_the_accumulator():
    probs = random_probs(2, 2, 3, 4)
    acc = torch.randn(2, 4)
    km = torch.zeros(2, 4, dtype=torch.bool)
    assert torch.equal(ops.token_importance(probs, None, km, acc), acc)


def test_token_importance_is_functional():
    acc = torch.ones(1, 5)
    out = ops.token_importance(random_probs(1, 2, 3, 5), accumulator=acc)
    assert torch.equal(acc, torch.ones(1, 5)) and out.data_ptr() != acc.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_token_importance_low_precision_and_non_contiguous(dtype):
    probs = random_probs(2, 4, 9, 40).to(dtype)
    torch.testing.assert_close(ops.token_importance(probs), ops_ref.token_importance(probs))
    transposed = random_probs(2, 4, 40, 9).transpose(2, 3)
    assert not transposed.is_contiguous()
    torch.testing.assert_close(ops.token_importance(transposed), ops_ref.token_importance(transposed))


def test_token_importance_extreme_magnitudes_and_zeros():
    probs = torch.zeros(1, 2, 3, 4)
    probs[0, 0, 0, 1] = 3e38
    probs[0, 1, 2, 2] = 1e-40
    torch.testing.assert_close(ops.token_importance(probs), ops_ref.token_importance(probs))


def test_token_importance_bad_inputs():
    probs = random_probs(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"token_importance: probs must be \[B, H, Lq, Lk\]"):
        ops.token_importance(probs[0])
    with pytest.raises(TypeError, match="token_importance: probs must be a floating dtype"):
        ops.token_importance(probs.to(torch.int32))
    with pytest.raises(ValueError, match="token_importance: query_mask must have shape"):
        ops.token_importance(probs, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="token_importance: key_mask must be Bool"):
        ops.token_importance(probs, None, torch.ones(2, 5))
    with pytest.raises(ValueError, match="token_importance: accumulator must have shape"):
        ops.token_importance(probs, None, None, torch.zeros(2, 4))
    with pytest.raises(TypeError, match="token_importance: accumulator must be Float"):
        ops.token_importance(probs, None, None, torch.zeros(2, 5, dtype=torch.float64))


# ---------------------------------------------------------------- head importance


def test_head_importance_hand_computed():
    out = torch.tensor([[[[1.0, -2.0], [0.5, 0.5]], [[-3.0, 0.0], [0.0, -0.25]]]])  # [1, 2, 2, 2]
    assert ops.head_importance(out)[0].tolist() == pytest.approx([4.0, 3.25])
    qm = torch.tensor([[False, True]])
    assert ops.head_importance(out, qm, torch.tensor([[1.0, 2.0]]))[0].tolist() == pytest.approx([2.0, 2.25])


@pytest.mark.parametrize("shape", [(2, 3, 5, 8), (1, 12, 128, 64), (4, 2, 1, 3)])
def test_head_importance_matches_reference(shape):
    b, h, lq, _ = shape
    attn_out = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    qm = random_mask((b, lq), 6)
    acc = torch.randn(b, h)
    for args in [(attn_out,), (attn_out, qm), (attn_out, qm, acc), (attn_out, None, acc)]:
        torch.testing.assert_close(ops.head_importance(*args), ops_ref.head_importance(*args))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_head_importance_low_precision_non_contiguous_masked(dtype):
    attn_out = torch.randn(2, 6, 3, 10).transpose(1, 2).to(dtype)  # [2, 3, 6, 10] non-contiguous
    qm = torch.tensor([[True] * 6, [False] * 6])
    got = ops.head_importance(attn_out, qm)
    torch.testing.assert_close(got, ops_ref.head_importance(attn_out, qm))
    assert (got[1] == 0).all()


def test_head_importance_bad_inputs():
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"head_importance: attn_out must be \[B, H, Lq, D\]"):
        ops.head_importance(x[0])
    with pytest.raises(TypeError, match="head_importance: attn_out must be a floating dtype"):
        ops.head_importance(x.long())
    with pytest.raises(ValueError, match="head_importance: query_mask must have shape"):
        ops.head_importance(x, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="head_importance: accumulator must have shape"):
        ops.head_importance(x, None, torch.zeros(2, 4))


def test_opcheck():
    probs = random_probs(2, 3, 4, 5)
    qm, km = random_mask((2, 4), 7), random_mask((2, 5), 8)
    torch.library.opcheck(torch.ops.spatten.token_importance.default, (probs, qm, km, torch.randn(2, 5)))
    torch.library.opcheck(torch.ops.spatten.token_importance.default, (probs,))
    attn_out = torch.randn(2, 3, 4, 6)
    torch.library.opcheck(torch.ops.spatten.head_importance.default, (attn_out, qm, torch.randn(2, 3)))
    torch.library.opcheck(torch.ops.spatten.head_importance.default, (attn_out,))


def test_results_do_not_depend_on_the_thread_count():
    """Each output element is summed in a fixed order inside one task, so results are bitwise reproducible."""
    probs = random_probs(3, 12, 64, 700, seed=12)
    attn_out = torch.randn(3, 12, 64, 64, generator=torch.Generator().manual_seed(13))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops.token_importance(probs), ops.head_importance(attn_out)
        torch.set_num_threads(2)
        multi = ops.token_importance(probs), ops.head_importance(attn_out)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(single, multi))
