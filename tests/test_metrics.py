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


def test_gaps_to_oracles_average_over_the_oracles():
    model = {"TA": 90, "RA": 95, "FA": 80, "MIA": 60}
    oracles = [{"TA": 91, "RA": 94, "FA": 70, "MIA": 50, "per_class": [1.0, float("nan")]},
               {"TA": 93, "RA": 96, "FA": 74, "MIA": 54, "per_class": [3.0, float("nan")]}]
    mean = M.mean_metrics(oracles)
    assert mean["TA"] == 92 and mean["FA"] == 72 and mean["per_class"][0] == 2.0 and math.isnan(mean["per_class"][1])
    gap = M.gaps_to_oracles(model, onehot([0, 1]), oracles, [onehot([0, 2]), onehot([0, 1])])
    assert gap["AvgGap"] == pytest.approx((2 + 0 + 8 + 8) / 4)  # against the oracles' mean, not each oracle
    assert gap["PG"] == 25.0  # 50% against the first oracle, 0% against the second
    assert gap["KL"] == pytest.approx(M.kl_divergence(onehot([0, 2]), onehot([0, 1])) / 2)
    with pytest.raises(ValueError, match="no metrics"):
        M.mean_metrics([])


def test_the_attack_compares_listed_ids_with_test_samples_of_their_classes(digits):
    """A lasso or id file is often a few classes: its held-out set copies their mix, so the MIA reads membership
    rather than class; a class request takes its classes' test images, a random share the whole test set."""
    from core.data import request_classes, request_ids, request_random

    ids = np.flatnonzero(np.isin(digits.y_train, [3, 7]))[:30]
    held = M.heldout_for(request_ids(digits, ids.tolist()), digits)
    assert set(digits.y_test[held]) == {3, 7}
    share = np.bincount(digits.y_train[ids], minlength=10)[[3, 7]] / len(ids)
    got = np.bincount(digits.y_test[held], minlength=10)[[3, 7]] / len(held)
    assert np.abs(got - share).max() < 0.05
    assert np.array_equal(M.heldout_for(request_classes(digits, [4]), digits), np.flatnonzero(digits.y_test == 4))
    assert len(M.heldout_for(request_random(digits, 0.1, 0), digits)) == len(digits.y_test)


def test_split_metrics_are_computed_once_per_model_and_request_and_handed_out_as_copies(digits):
    from core.data.requests import request_classes

    class Counted:
        """Predicts every label right except class 0's, counting the predictions asked for."""

        def __init__(self):
            self.calls = 0

        def split_proba(self, dataset, split):
            self.calls += 1
            labels = dataset.y_test if split == "test" else dataset.y_train
            return onehot(np.where(labels == 0, 1, labels), dataset.num_classes)

    model, request = Counted(), request_classes(digits, [0])
    first = M.split_metrics(model, digits, request)
    first["TA"], first["per_class"][0] = -1.0, -1.0  # a caller's changes stay its own
    again = M.split_metrics(model, digits, request)
    assert model.calls == 2  # test and train predictions, once
    assert again["FA"] == 0.0 and again["RA"] == 100.0 and again["per_class"][0] == 0.0 and again["TA"] > 0
    assert again == M.model_metrics(model.split_proba(digits, "test"), model.split_proba(digits, "train"), digits,
                                    request)
    M.split_metrics(model, digits, request_classes(digits, [1]))
    assert model.calls == 6  # another request is computed anew
