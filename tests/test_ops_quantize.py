"""spatten.ops.quantize_msb_lsb / dequantize_msb_lsb: exact agreement with the reference, hand-computed values,
error bounds and bad inputs."""

import pytest
import torch

from spatten import ops, ops_ref

BITS = [(1, 1), (2, 2), (6, 4), (8, 4), (4, 0), (1, 15), (8, 8), (16, 0)]


def test_hand_computed_values():
    # b = 4 bits: qmax = 7, per-head scale = max|x| / 7 = 1 (exact, so x / scale is exact too).
    x = torch.tensor([[7.0, -3.5, 1.75, 0.0]])
    msb, lsb, scale = ops.quantize_msb_lsb(x, 2, 2, "head")
    assert scale.shape == (1, 1) and scale.item() == 1.0
    # q = round_half_even([7, -3.5, 1.75, 0]) = [7, -4, 2, 0]; msb = floor(q / 4); lsb = q - 4 msb.
    assert msb.tolist() == [[1, -1, 0, 0]] and lsb.tolist() == [[3, 0, 2, 0]]
    assert msb.dtype == lsb.dtype == torch.int16
    full = ops.dequantize_msb_lsb(msb, lsb, scale, 2)
    assert full.tolist() == [[7.0, -4.0, 2.0, 0.0]]
    # MSB only: the two missing bits are taken at their midpoint 2.
    coarse = ops.dequantize_msb_lsb(msb, None, scale, 2)
    assert coarse.tolist() == [[6.0, -2.0, 2.0, 2.0]]


def test_rounds_half_to_even():
    x = torch.tensor([[7.0, 2.5, -2.5, 3.5, 0.5, -0.5]])  # scale = 7 / 7 = 1 exactly
    msb, lsb, scale = ops.quantize_msb_lsb(x, 4, 0, "head")
    assert scale.item() == 1.0
    assert msb.tolist() == [[7, 2, -2, 4, 0, 0]] and (lsb == 0).all()


def test_per_token_scales_and_all_zero_group():
    x = torch.tensor([[[3.0, -1.5], [0.0, 0.0], [0.0, -0.25]]])  # [1, L=3, D=2]
    msb, lsb, scale = ops.quantize_msb_lsb(x, 3, 3, "token")  # qmax = 31
    assert scale.shape == (1, 3, 1)
    torch.testing.assert_close(scale.flatten(), torch.tensor([3.0 / 31, 1.0, 0.25 / 31]))
    q = msb.int() * 8 + lsb.int()
    assert q.tolist() == [[[31, -16], [0, 0], [0, -31]]]  # -1.5 / (3/31) = -15.5 -> -16 (half to even)


@pytest.mark.parametrize("msb_bits,lsb_bits", BITS)
@pytest.mark.parametrize("per", ["head", "token"])
def test_matches_reference_exactly(msb_bits, lsb_bits, per):
    x = torch.randn(2, 3, 17, 24, generator=torch.Generator().manual_seed(msb_bits * 31 + lsb_bits)) * 4
    got = ops.quantize_msb_lsb(x, msb_bits, lsb_bits, per)
    want = ops_ref.quantize_msb_lsb(x, msb_bits, lsb_bits, per)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g, w)
    msb, lsb, scale = got
    assert ((lsb >= 0) & (lsb.int() < 2**lsb_bits)).all()
    for with_lsb in (True, False):
        low = lsb if with_lsb else None
        assert torch.equal(
            ops.dequantize_msb_lsb(msb, low, scale, lsb_bits), ops_ref.dequantize_msb_lsb(msb, low, scale, lsb_bits)
        )


@pytest.mark.parametrize("per", ["head", "token"])
def test_error_is_at_most_half_a_step(per):
    """Independent of the reference: the round trip lands within scale / 2 of x, and the group maximum hits qmax."""
    x = torch.randn(4, 50, 64, generator=torch.Generator().manual_seed(9)) * 10
    msb, lsb, scale = ops.quantize_msb_lsb(x, 6, 4, per)
    back = ops.dequantize_msb_lsb(msb, lsb, scale, 4)
    assert ((back - x).abs() <= scale / 2 * (1 + 1e-5)).all()
    q = msb.int() * 16 + lsb.int()
    assert q.abs().amax().item() == 2**9 - 1
    # MSB only: off by at most half an MSB step (8 LSB steps) plus the rounding step.
    coarse = ops.dequantize_msb_lsb(msb, None, scale, 4)
    assert ((coarse - x).abs() <= scale * 8.5 * (1 + 1e-5)).all()


def test_extreme_magnitudes_and_subnormal_groups():
    x = torch.zeros(5, 3, 4)
    x[0] = 3e38
    x[0, 0, 0] = -3.4e38
    x[1] = torch.randn(3, 4) * 1e-42  # subnormal group: the scale would underflow to 0
    x[2, 1, 2] = 1e-45
    x[3] = 1.0
    for per in ("head", "token"):
        got = ops.quantize_msb_lsb(x, 6, 4, per)
        want = ops_ref.quantize_msb_lsb(x, 6, 4, per)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
        assert torch.isfinite(got[2]).all() and (got[2] > 0).all()
        assert torch.isfinite(ops.dequantize_msb_lsb(got[0], got[1], got[2], 4)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_and_non_contiguous_inputs(dtype):
    x = (torch.randn(3, 32, 16) * 2).to(dtype).transpose(1, 2)  # [3, 16, 32], non-contiguous
    for per in ("head", "token"):
        for g, w in zip(ops.quantize_msb_lsb(x, 8, 4, per), ops_ref.quantize_msb_lsb(x, 8, 4, per)):
            assert torch.equal(g, w)
    msb, lsb, scale = ops.quantize_msb_lsb(x, 8, 4, "token")
    msb_t, lsb_t = msb.transpose(0, 1), lsb.transpose(0, 1)  # dequantize reads non-contiguous int16 too
    assert torch.equal(
        ops.dequantize_msb_lsb(msb_t, lsb_t, scale.transpose(0, 1), 4),
        ops_ref.dequantize_msb_lsb(msb_t, lsb_t, scale.transpose(0, 1), 4),
    )


def test_dequantize_broadcasts_leading_scale_dims():
    msb = torch.randint(-30, 30, (2, 3, 5, 4), dtype=torch.int16)
    scale = torch.tensor([0.5]).reshape(1, 1, 1, 1)
    assert torch.equal(ops.dequantize_msb_lsb(msb, None, scale, 0), msb.float() * 0.5)
    assert torch.equal(ops.dequantize_msb_lsb(msb, None, scale, 3), (msb.float() * 8 + 4) * 0.5)


def test_empty_inputs():
    msb, lsb, scale = ops.quantize_msb_lsb(torch.zeros(2, 0, 4), 4, 4, "head")
    assert msb.shape == (2, 0, 4) and scale.tolist() == [[[1.0]], [[1.0]]]
    assert ops.dequantize_msb_lsb(msb, lsb, scale, 4).shape == (2, 0, 4)


@pytest.mark.parametrize("msb_bits,lsb_bits", [(0, 4), (4, -1), (1, 0), (9, 8), (17, 0)])
def test_bits_out_of_range_raise(msb_bits, lsb_bits):
    for impl in (ops, ops_ref):
        with pytest.raises(ValueError, match="quantize_msb_lsb: bits out of range"):
            impl.quantize_msb_lsb(torch.randn(2, 3), msb_bits, lsb_bits, "head")


def test_quantize_bad_inputs():
    x = torch.randn(2, 3, 4)
    for impl in (ops, ops_ref):
        with pytest.raises(ValueError, match="per must be 'head' or 'token'"):
            impl.quantize_msb_lsb(x, 4, 4, "channel")
        with pytest.raises(TypeError, match="x must be a floating dtype"):
            impl.quantize_msb_lsb(x.int(), 4, 4, "head")
        with pytest.raises(ValueError, match=r"x must be \[..., L, D\]"):
            impl.quantize_msb_lsb(torch.randn(5), 4, 4, "head")
        for bad in (float("nan"), float("inf")):
            y = x.clone()
            y[1, 2, 3] = bad
            with pytest.raises(ValueError, match="x contains NaN or Inf"):
                impl.quantize_msb_lsb(y, 4, 4, "token")


def test_dequantize_bad_inputs():
    msb, lsb, scale = ops.quantize_msb_lsb(torch.randn(2, 3, 4), 4, 4, "token")
    for impl in (ops, ops_ref):
        with pytest.raises(TypeError, match="msb must be"):
            impl.dequantize_msb_lsb(msb.int(), lsb, scale, 4)
        with pytest.raises(ValueError, match="lsb"):
            impl.dequantize_msb_lsb(msb, lsb[:, :2], scale, 4)
        with pytest.raises(ValueError, match=r"scale must be \[..., 1, 1\]"):
            impl.dequantize_msb_lsb(msb, lsb, scale[:, :2], 4)
        with pytest.raises(TypeError, match="scale must be"):
            impl.dequantize_msb_lsb(msb, lsb, scale.half(), 4)
        with pytest.raises(ValueError, match=r"lsb_bits must be in \[0, 15\]"):
            impl.dequantize_msb_lsb(msb, lsb, scale, 16)


def test_opcheck():
    x = torch.randn(2, 3, 5, 8)
    for per in ("head", "token"):
        torch.library.opcheck(torch.ops.spatten.quantize_msb_lsb.default, (x, 6, 4, per))
        msb, lsb, scale = ops.quantize_msb_lsb(x, 6, 4, per)
        torch.library.opcheck(torch.ops.spatten.dequantize_msb_lsb.default, (msb, lsb, scale, 4))
        torch.library.opcheck(torch.ops.spatten.dequantize_msb_lsb.default, (msb, None, scale, 4))


@pytest.mark.parametrize("per", ["head", "token"])
def test_many_groups_split_across_threads_match_reference(per):
    """Large enough that at::parallel_for splits groups (and dequantize's scale groups) over several tasks."""
    x = torch.randn(8, 12, 128, 64, generator=torch.Generator().manual_seed(11))
    got = ops.quantize_msb_lsb(x, 6, 4, per)
    want = ops_ref.quantize_msb_lsb(x, 6, 4, per)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    msb, lsb, scale = got
    assert torch.equal(ops.dequantize_msb_lsb(msb, None, scale, 4), ops_ref.dequantize_msb_lsb(msb, None, scale, 4))
