"""Each metric on hand-made inputs with known answers."""

import math

import numpy as np
import pytest

from core.eval import metrics as M


def onehot(labels, c=3, p=0.9):
    out = np.full((len(labels), c), (1 - p) / (c - 1))
    out[np.arange(len(labels)), labels] = p
    return out


def test_accuracy_and_per_class():
    probs = onehot([0, 1, 2, 2])
    assert M.accuracy(probs, np.array([0, 1, 2, 0])) == 75.0
    np.testing.assert_allclose(M.per_class_accuracy(probs, np.array([0, 1, 2, 0]), 3), [50, 100, 100])
    assert math.isnan(M.accuracy(probs[:0], np.array([], int)))


def test_prediction_gap_is_disagreement_percent():
    assert M.prediction_gap(onehot([0, 1, 2, 0]), onehot([0, 1, 1, 1])) == 50.0
    assert M.prediction_gap(onehot([0, 1]), onehot([0, 1])) == 0.0


def test_kl_divergence_known_value():
    p, q = np.array([[0.5, 0.5]]), np.array([[0.25, 0.75]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert M.kl_divergence(p, q) == pytest.approx(expected)
    assert M.kl_divergence(p, p) == pytest.approx(0.0)


def test_auroc_perfect_chance_and_ties():
    assert M.auroc([3, 4, 5], [0, 1, 2]) == 100.0
    assert M.auroc([0, 1, 2], [3, 4, 5]) == 0.0
    assert M.auroc([1, 1], [1, 1]) == 50.0
    assert M.auroc([2, 0], [1]) == 50.0


def test_mia_uses_lower_loss_as_member_evidence():
    labels = np.array([0, 1])
    members, heldout = onehot(labels, p=0.99), onehot(labels, p=0.5)
    assert M.mia_auroc(members, labels, heldout, labels) == 100.0
    assert M.mia_auroc(heldout, labels, members, labels) == 0.0


def test_gap_metrics_average_over_four():
    model = {"TA": 90, "RA": 95, "FA": 80, "MIA": 60}
    oracle = {"TA": 91, "RA": 94, "FA": 70, "MIA": 50}
    gap = M.gap_metrics(model, onehot([0, 1]), oracle, onehot([0, 2]))
    assert gap["AvgGap"] == pytest.approx((1 + 1 + 10 + 10) / 4)
    assert gap["PG"] == 50.0


def test_noise_floor_is_how_far_a_reseed_moves_each_metric(spm_model, parametric_model, digits):
    """Per-metric distances, never a model's raw scores: 0 between an oracle and itself, |b - a| otherwise."""
    from core.data import request_random

    request = request_random(digits, 0.1, 0)
    same = M.noise_floor(spm_model, spm_model, digits, request)
    assert set(("TA", "RA", "FA", "MIA", "PG", "KL", "AvgGap")) <= set(same)
    assert all(abs(v) < 1e-9 for v in same.values())
    floor = M.noise_floor(spm_model, parametric_model, digits, request)

    def own(model):
        return M.model_metrics(model.split_proba(digits, "test"), model.split_proba(digits, "train"), digits, request)

    a, b = own(spm_model), own(parametric_model)
    for name in ("TA", "RA", "FA", "MIA"):
        assert floor[name] == pytest.approx(abs(b[name] - a[name]))
    assert floor["AvgGap"] == pytest.approx(np.mean([floor[k] for k in ("TA", "RA", "FA", "MIA")]))
    assert floor["PG"] == M.prediction_gap(parametric_model.split_proba(digits, "test"),
                                           spm_model.split_proba(digits, "test"))
