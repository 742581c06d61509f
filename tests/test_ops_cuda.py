"""The CUDA implementations against the pure-PyTorch references (runs only where torch sees a GPU)."""

import pytest
import torch

from spatten import ops, ops_ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (CPU machine)")


def _cuda(*tensors):
    return [t.cuda() if isinstance(t, torch.Tensor) else t for t in tensors]


def _close(got, want):
    if isinstance(want, tuple):
        for g, w in zip(got, want):
            _close(g, w)
        return
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows,n,k", [(1, 1, 1), (12 * 128, 128, 64), (12, 1024, 300), (3, 16384, 5000),
                                      (5, 4097, 4097), (4, 300, 0)])
def test_topk_matches_reference(rows, n, k):
    scores = torch.randn(rows, n)
    scores[:, ::7] = 0.5  # many ties across chunk boundaries
    if n > 3:
        scores[0, 1] = -0.0
        scores[0, 2] = 0.0
    _close(ops.topk_indices(scores.cuda(), k), ops_ref.topk_indices(scores, k))


def test_topk_all_equal_and_half_precision():
    scores = torch.ones(3, 2000)
    _close(ops.topk_indices(scores.cuda(), 1000), ops_ref.topk_indices(scores, 1000))
    half = torch.randn(4, 512).half()
    _close(ops.topk_indices(half.cuda(), 100), ops_ref.topk_indices(half, 100))


def test_topk_rejects_nan_on_cuda():
    scores = torch.randn(2, 8)
    scores[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ops.topk_indices(scores.cuda(), 2)


def test_importance_and_local_value_match_reference():
    probs = torch.softmax(torch.randn(2, 3, 5, 7), -1)
    qmask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    kmask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1] * 7], dtype=torch.bool)
    acc = torch.rand(2, 7)
    _close(ops.token_importance(*_cuda(probs, qmask, kmask, acc)),
           ops_ref.token_importance(probs, qmask, kmask, acc))
    out = torch.randn(2, 3, 5, 4)
    _close(ops.head_importance(*_cuda(out, qmask)), ops_ref.head_importance(out, qmask))
    v = torch.randn(2, 3, 7, 4)
    _close(ops.local_value_attention(*_cuda(probs, v), 3), ops_ref.local_value_attention(probs, v, 3))


@pytest.mark.parametrize("per", ["head", "token"])
def test_quantization_and_progressive_attention_match_reference(per):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 6, 16), torch.randn(2, 4, 33, 16), torch.randn(2, 4, 33, 16)
    msb, lsb, scale = ops_ref.quantize_msb_lsb(k, 6, 4, per)
    _close(ops.quantize_msb_lsb(k.cuda(), 6, 4, per), (msb, lsb, scale))
    _close(ops.dequantize_msb_lsb(*_cuda(msb, None, scale), 4), ops_ref.dequantize_msb_lsb(msb, None, scale, 4))
    mask = torch.rand(2, 1, 6, 33) > 0.3
    for threshold in (0.0, 0.2, 1.5):
        want = ops_ref.progressive_attention(q, msb, lsb, scale, v, mask, threshold, 4, 0.25)
        got = ops.progressive_attention(*_cuda(q, msb, lsb, scale, v, mask), threshold, 4, 0.25)
        _close(got, want)
