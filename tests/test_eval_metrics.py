"""Metrics against hand-computed cases and independent implementations (scikit-learn, scipy by hand)."""

import math

import numpy as np
import pytest

from spatten.eval import metrics


def test_hand_computed_binary_case():
    y = [1, 1, 1, 0, 0, 0, 1, 0]
    p = [1, 1, 0, 0, 0, 1, 1, 1]
    # tp=3 fp=2 fn=1 tn=2
    assert metrics.accuracy(p, y) == pytest.approx(5 / 8)
    assert metrics.f1(p, y) == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert metrics.matthews(p, y) == pytest.approx((3 * 2 - 2 * 1) / math.sqrt(5 * 4 * 3 * 4))


def test_against_sklearn_on_random_labels():
    import sklearn.metrics as sk
    rng = np.random.default_rng(0)
    for _ in range(5):
        y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
        assert metrics.f1(p, y) == pytest.approx(sk.f1_score(y, p))
        assert metrics.matthews(p, y) == pytest.approx(sk.matthews_corrcoef(y, p))
        y3, p3 = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
        assert metrics.matthews(p3, y3) == pytest.approx(sk.matthews_corrcoef(y3, p3))


def test_degenerate_matthews_is_zero_like_cola():
    assert metrics.matthews([1, 1, 1], [0, 1, 0]) == 0.0


def test_correlations_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    xc, yc = x - x.mean(), y - y.mean()
    assert metrics.pearson(x, y) == pytest.approx(xc @ yc / math.sqrt((xc @ xc) * (yc @ yc)))
    # ranks x: 1..5, y: 2,1,4,3,5 -> d = -1, 1, -1, 1, 0 -> 1 - 6*4/(5*24)
    assert metrics.spearman(x, y) == pytest.approx(1 - 6 * 4 / (5 * 24))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="equally long"):
        metrics.accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="no predictions"):
        metrics.f1([], [])
    with pytest.raises(ValueError, match="at least one scored token"):
        metrics.perplexity(1.0, 0)


def test_lm_metrics():
    assert metrics.perplexity(3 * math.log(4.0), 3) == pytest.approx(4.0)
    ref = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    test = np.log(np.array([[0.25, 0.75], [0.9, 0.1]]))
    kl, agree = metrics.kl_and_agreement(ref, test)
    expected = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)) / 2
    assert kl == pytest.approx(expected)
    assert agree == 0.5  # row 0: argmax 0 vs 1; row 1 agrees
    with pytest.raises(ValueError, match="logits must be equal"):
        metrics.kl_and_agreement(ref, test[:1])
