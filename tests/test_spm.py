"""SPM's defining properties: deletion equals rebuilding the prototypes without the forgotten samples."""

import numpy as np
import pytest
import torch

from core.data import request_classes, request_random
from core.models import get_model_kind
from core.models.id_index import held_ids
from core.models.spm import SPMClassifier, class_means, sample_support
from core.models.training import TrainConfig


def rebuilt_from_scratch(model: SPMClassifier, forget_ids) -> SPMClassifier:
    active = model.active.copy()
    active[forget_ids] = False
    return SPMClassifier.from_features(model._shared, active)


@pytest.mark.parametrize("fraction,seed", [(0.01, 0), (0.1, 1), (0.5, 2)])
def test_incremental_deletion_equals_recomputing_prototypes(spm_model, digits, fraction, seed):
    ids = request_random(digits, fraction, seed).ids
    deleted = spm_model.forget(ids)
    scratch = rebuilt_from_scratch(spm_model, list(ids))
    assert np.abs(deleted.prototypes - scratch.prototypes).max() <= 1e-5
    assert np.array_equal(deleted.counts, scratch.counts)
    assert np.abs(deleted.split_proba(digits, "test") - scratch.split_proba(digits, "test")).max() <= 1e-5


def test_split_predictions_from_the_shared_queries_equal_the_fusion(spm_model, digits):
    """A split's predictions reuse W_q f(x), which no deletion changes: the same numbers as the full fusion."""
    deleted = spm_model.forget(request_random(digits, 0.1, 4).ids)
    for split in ("test", "train"):
        fused = torch.softmax(torch.as_tensor(deleted.class_scores(deleted.features_of(digits, split))), 1).numpy()
        assert np.array_equal(deleted.split_proba(digits, split), fused)
    assert deleted._shared.queries is spm_model._shared.queries  # one projection per split for every memory


def test_reencode_path_agrees_with_incremental(spm_model, digits):
    ids = request_random(digits, 0.2, 3).ids
    incremental, reencoded = spm_model.forget(ids), spm_model.forget(ids, mode="reencode")
    assert np.abs(incremental.prototypes - reencoded.prototypes).max() <= 1e-4
    assert (incremental.split_proba(digits, "test").argmax(1) == reencoded.split_proba(digits, "test").argmax(1)).all()


def test_deletion_changes_no_weight_and_not_the_original(spm_model, digits):
    before = {k: v.clone() for k, v in spm_model.networks()["net"].state_dict().items()}
    sums, probs = spm_model.sums.copy(), spm_model.split_proba(digits, "test").copy()
    deleted = spm_model.forget(request_random(digits, 0.3, 0).ids)
    after = deleted.networks()["net"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(spm_model.sums, sums)  # the shared original is untouched
    assert np.array_equal(spm_model.split_proba(digits, "test"), probs)
    assert not np.array_equal(deleted.sums, sums)


def test_forgotten_class_has_probability_exactly_zero(spm_model, digits):
    request = request_classes(digits, [3])
    probs = spm_model.forget(request.ids).split_proba(digits, "test")
    assert (probs[:, 3] == 0).all()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


def test_bad_ids_are_refused_with_a_message(spm_model):
    with pytest.raises(ValueError, match="unknown training ids"):
        spm_model.forget([10**7])
    with pytest.raises(ValueError, match="no ids"):
        spm_model.forget([])
    once = spm_model.forget([1, 2])
    with pytest.raises(ValueError, match="already forgotten"):
        once.forget([2])


def test_knn_mode_never_retrieves_deleted_samples(spm_model, digits):
    knn = spm_model.with_mode("knn", knn_k=16)
    ids = np.array(request_random(digits, 0.4, 7).ids)
    features = knn.features_of(digits, "test")
    found_before, _ = knn.neighbours(features)
    assert np.isin(found_before, ids).any()  # the deleted samples were being retrieved
    deleted = knn.forget(ids)
    assert not np.isin(held_ids(deleted.knn_index()), ids).any()  # removed from its index, not masked
    assert len(held_ids(knn.knn_index())) == digits.num_train  # the original keeps its own
    found, weights = deleted.neighbours(features)
    assert not np.isin(found, ids).any()
    assert np.allclose(weights.sum(1), 1, atol=1e-5)
    assert np.allclose(deleted.split_proba(digits, "test").sum(1), 1, atol=1e-5)


def test_knn_index_follows_every_edit_and_equals_a_fresh_index(spm_model, digits):
    knn = spm_model.with_mode("knn", knn_k=8)
    features = knn.features_of(digits, "test")[:50]
    first, second = np.arange(0, 300, 3), np.arange(1, 300, 3)
    knn.knn_index()  # built, so each forget edits a copy of it with remove_ids
    chain = knn.forget(first).forget(second, mode="reencode")
    np.testing.assert_array_equal(held_ids(chain.knn_index()), chain.memory_ids())
    fresh = SPMClassifier(chain._shared, chain.active, chain.sums, chain.counts)  # its index built from scratch
    np.testing.assert_array_equal(chain.neighbours(features)[0], fresh.neighbours(features)[0])
    check = chain.memory_check(np.concatenate([first, second]))
    assert check["forgotten_in_memory"] == 0 and check["forgotten_in_knn_index"] == 0
    assert check["sums_rel_diff_from_rebuilt"] < 1e-5 and check["counts_match_rebuilt"]


def test_support_never_contains_the_batch_queries():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    ids = np.arange(400)
    pools = {c: ids[labels == c] for c in range(5)}
    for _ in range(50):
        batch = rng.choice(ids, 64, replace=False)
        support = sample_support(batch, labels[batch], pools, 40, rng)
        assert not np.isin(support, batch).any()
        assert set(labels[support]) == set(labels[batch])  # split over the batch's labels


def test_self_exclusion_holds_in_every_training_episode(digits):
    kind = get_model_kind("spm")
    config = kind.config_cls()
    net = kind.build(digits, config)
    episodes = []
    kind.fit(net, digits, digits.train_ids[:600], config, TrainConfig(epochs=2, batch_size=64),
             episode_hook=lambda b, s: episodes.append((b.copy(), s.copy())))
    assert len(episodes) >= 18
    for batch, support in episodes:
        assert len(support) > 0 and not np.isin(support, batch).any()
        assert np.isin(support, digits.train_ids[:600]).all()  # only the model's own training ids


def test_class_means_mark_absent_classes():
    features = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0]])
    means, present = class_means(features, torch.tensor([0, 0, 2]), 4)
    assert torch.allclose(means[0], torch.tensor([2.0, 1.0]))
    assert present.tolist() == [True, False, True, False]
