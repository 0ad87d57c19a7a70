"""Map rows, aligned layouts, the layout cache, FAISS neighbours and SPM explanations on digits.

Fast: models are untrained (random weights are enough to test the plumbing) and UMAP runs only in the
test marked slow.
"""

import numpy as np
import pytest
import torch

from core import charts
from core.data import load_dataset, request_classes, request_random
from core.eval import embeddings as E
from core.eval import neighbours as NB
from core.models.base import Classifier
from core.models.spm import SPMConfig, build_spm, wrap_spm
from core.views import maps as V


@pytest.fixture(scope="module")
def ds():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def spm(ds):
    torch.manual_seed(0)
    return wrap_spm(build_spm(ds, SPMConfig()), ds, ds.train_ids, SPMConfig())


class Linear(Classifier):
    """A tiny stand-in model: features are a fixed linear map of the pixels, optionally rotated."""

    kind = "linear"

    def __init__(self, num_classes, rotation=None, seed=0):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(64, 16)).astype(np.float32)
        self.v = rng.normal(size=(16, num_classes)).astype(np.float32)
        self.rotation = rotation
        self.num_classes = num_classes

    def embed(self, x):
        f = x.reshape(len(x), -1) @ self.w
        return (f @ self.rotation).astype(np.float32) if self.rotation is not None else f

    def predict_proba(self, x):
        z = (x.reshape(len(x), -1) @ self.w) @ self.v
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    def networks(self):
        return {}


def orthogonal(d, seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q.astype(np.float32)


def test_map_rows_hold_every_test_image_and_the_whole_forget_set(ds):
    request = request_random(ds, 0.1, seed=3)
    rows = E.map_rows(ds, request, train_sample=50)
    assert rows.test_ids.tolist() == list(range(len(ds.y_test)))
    assert set(request.ids) <= set(rows.train_ids.tolist())
    assert rows.forgotten.sum() == len(request) and not rows.forgotten[:len(rows.test_ids)].any()
    assert rows.n == len(rows.keys) == len(rows.labels)
    assert rows.keys[0] == "test:0" and rows.keys[-1].startswith("train:")
    assert (rows.labels[len(rows.test_ids):] == ds.y_train[rows.train_ids]).all()
    assert E.map_rows(ds, request, 50).digest() == rows.digest()  # seeded: same rows, same cache key
    assert E.map_rows(ds, None, 50, max_test=10).n == 60


def test_procrustes_recovers_rotation_reflection_scale_and_shift():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(200, 2))
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag([1, -1])
    moving = 3.0 * target @ rot + np.array([5.0, -2.0])
    assert np.allclose(E.procrustes(moving, target), target, atol=1e-4)
    # Rows outside the weights (samples that moved) do not bend the fit.
    moved = moving.copy()
    moved[:20] += 40.0
    weights = np.r_[np.zeros(20, bool), np.ones(180, bool)]
    aligned = E.procrustes(moved, target, weights)
    assert np.allclose(aligned[20:], target[20:], atol=1e-4)


def test_one_aligned_layout_for_models_whose_features_differ_by_a_rotation(ds):
    original = Linear(ds.num_classes)
    oracle = Linear(ds.num_classes, rotation=orthogonal(16))
    rows = E.map_rows(ds, None, train_sample=200)
    emb = E.collect({"original": original, "oracle": oracle}, ds, rows)
    assert emb.models == ["original", "oracle"] and "oracle" not in emb.same_features
    layout = E.aligned_layout(emb, "pca")
    # PCA of rotated features is the same picture up to sign; the alignment must undo that.
    assert np.allclose(layout.coords["oracle"], layout.coords["original"], atol=1e-3)
    assert layout.shift("oracle").max() < 1e-3


def test_deletion_that_keeps_the_encoder_gives_the_same_coordinates(ds, spm):
    request = request_classes(ds, [3])
    unlearned = spm.forget(list(request.ids))
    rows = E.map_rows(ds, request, train_sample=100)
    emb = E.collect({"original": spm, "unlearned": unlearned}, ds, rows)
    assert emb.same_features == {"unlearned": "original"}
    layout = E.aligned_layout(emb, "pca")
    assert np.array_equal(layout.coords["unlearned"], layout.coords["original"])
    # What moves is the prediction: a forgotten class is never predicted after deletion.
    assert not (emb.predictions("unlearned") == 3).any()
    changed = V.colour_values(emb, layout, "unlearned", "prediction changed")
    assert changed.tolist() == (emb.predictions("unlearned") != emb.predictions("original")).astype(int).tolist()
    shift = V.colour_values(emb, layout, "unlearned", "shift size")  # falls back to the probability change
    assert np.allclose(shift, np.abs(emb.probs["unlearned"] - emb.probs["original"]).sum(1), atol=1e-5)
    assert V.colour_values(emb, layout, "unlearned", "forgotten").sum() == len(request)
    protos = V.prototype_positions(emb, layout, "unlearned", ds.num_classes)
    assert 3 not in protos and len(protos) == ds.num_classes - 1
    with pytest.raises(ValueError):
        V.colour_values(emb, layout, "original", "nonsense")


def test_layouts_are_cached_on_disk_by_models_request_and_rows(ds, tmp_path, monkeypatch):
    monkeypatch.setenv("UE_HOME", str(tmp_path))
    request = request_random(ds, 0.05, seed=0)
    rows = E.map_rows(ds, request, train_sample=100)
    emb = E.collect({"original": Linear(ds.num_classes), "oracle": Linear(ds.num_classes, seed=4)}, ds, rows)
    keys = {"original": "m-a", "oracle": "m-b"}
    first = E.cached_layout(emb, "pca", keys, request.key())
    assert not first.cached and (tmp_path / "layouts" / f"{first.key}.safetensors").is_file()
    second = E.cached_layout(emb, "pca", keys, request.key())
    assert second.cached and second.key == first.key
    for m in first.coords:
        assert np.array_equal(first.coords[m], second.coords[m])
    assert E.layout_key("pca", keys, "other", rows) != first.key
    assert E.layout_key("pca", {**keys, "oracle": "m-c"}, request.key(), rows) != first.key
    assert E.layout_key("umap", keys, request.key(), rows) != first.key
    import ast  # the page reads the cache at every run, beside other sessions' threads: no ast parse (see store)

    with monkeypatch.context() as patched:
        patched.setattr(ast, "literal_eval", lambda *a, **k: pytest.fail("ast used"))
        assert E.load_layout(first.key).method == "pca"
    (tmp_path / "layouts" / f"{first.key}.safetensors").write_bytes(b"damaged")  # corrupt: recomputed, not a crash
    assert E.load_layout(first.key) is None
    assert not list((tmp_path / "layouts").glob(".*"))  # no temporary files left behind


def test_map_figure_carries_sample_keys_in_customdata(ds, spm):
    request = request_classes(ds, [1])
    rows = E.map_rows(ds, request, train_sample=100)
    emb = E.collect({"original": spm, "unlearned": spm.forget(list(request.ids))}, ds, rows)
    layout = E.aligned_layout(emb, "pca")
    picked = ["test:0", rows.keys[-1]]
    fig = charts.map_figure(V.map_view(emb, layout, "label", ds.class_names, highlight=picked, prototypes=True))
    keyed = [t for t in fig.data if t.customdata is not None]
    seen = [k for t in keyed if t.name != "selected" for k in t.customdata]
    assert sorted(seen) == sorted(rows.keys * 2)  # every sample once per panel
    assert all(t.type == "scattergl" for t in fig.data)
    ringed = [t for t in fig.data if t.name == "selected"]
    assert len(ringed) == 2 and set(ringed[0].customdata) == set(picked)
    assert all(t.customdata is None for t in fig.data if t.name == "prototype")
    shifted = charts.map_figure(V.map_view(emb, layout, "shift size", ds.class_names, show="test"))
    assert len(shifted.data) == 2 and all(k.startswith("test:") for k in shifted.data[0].customdata)


def test_neighbours_come_from_held_samples_only_and_match_brute_force(ds, spm):
    request = request_classes(ds, [4])
    unlearned = spm.forget(list(request.ids))
    feats = NB.training_features(spm, ds)
    index = NB.NeighbourIndex(feats, NB.held_mask(unlearned, ds))
    query = int(request.ids[0])
    ids, d2 = index.search(feats[query], 10, exclude=query)
    assert not np.isin(ids[0], request.ids).any()
    allowed = np.flatnonzero(unlearned.active)
    brute = allowed[np.argsort(((feats[allowed] - feats[query]) ** 2).sum(1), kind="stable")[:10]]
    assert set(ids[0].tolist()) == set(brute.tolist())
    found = NB.neighbours_of(spm, ds, "train", 7, k=5)
    assert len(found) == 5 and 7 not in [n.id for n in found]
    assert [n.distance for n in found] == sorted(n.distance for n in found)
    after = NB.neighbours_of(unlearned, ds, "test", 0, k=5)
    assert not np.isin([n.id for n in after], request.ids).any()
    # A parametric-style model: held = everything outside the request.
    held = NB.held_mask(Linear(ds.num_classes), ds, request)
    assert held.sum() == ds.num_train - len(request)


def test_explain_spm_shows_the_removed_prototype_and_supporters(ds, spm):
    request = request_classes(ds, [2])
    unlearned = spm.forget(list(request.ids))
    test_id = int(np.flatnonzero(ds.y_test == 2)[0])
    why = NB.explain_spm(spm, unlearned, spm.features_of(ds, "test")[test_id], k=8)
    row = why["class_scores"][2]
    assert row["score_after"] is None and row["prob_after"] == 0.0 and row["prototype_samples_after"] == 0
    assert row["prototype_samples_before"] == int((ds.y_train == 2).sum())
    assert why["pred_after"] != 2
    assert abs(sum(r["prob_before"] for r in why["class_scores"]) - 1) < 1e-6
    assert len(why["knn_before"]) == 8 and len(why["knn_after"]) == 8
    assert set(why["removed"]) <= set(request.ids)
    assert not any(s["id"] in request.ids for s in why["knn_after"])
    assert NB.is_spm(spm) and not NB.is_spm(Linear(ds.num_classes))


@pytest.mark.slow
def test_umap_layout_is_aligned_and_cached(ds, spm, tmp_path, monkeypatch):
    monkeypatch.setenv("UE_HOME", str(tmp_path))
    rows = E.map_rows(ds, None, train_sample=100, max_test=200)
    emb = E.collect({"original": Linear(ds.num_classes), "oracle": Linear(ds.num_classes, rotation=orthogonal(16))},
                    ds, rows)
    threads = torch.get_num_threads()
    layout = E.cached_layout(emb, "umap", {"original": "a", "oracle": "b"}, None, E.UMAPParams(n_epochs=50))
    assert E.umap_is_warm()
    assert torch.get_num_threads() == threads  # numba's parallel code must not leave torch on more threads
    assert layout.coords["original"].shape == (rows.n, 2)
    # Same neighbourhoods (a rotation), started from the original's layout: the oracle lands close by.
    spread = np.linalg.norm(layout.coords["original"] - layout.coords["original"].mean(0), axis=1).mean()
    assert np.median(layout.shift("oracle")) < 0.25 * spread
    again = E.cached_layout(emb, "umap", {"original": "a", "oracle": "b"}, None, E.UMAPParams(n_epochs=50))
    assert again.cached


def test_an_unlearned_index_reuses_the_originals_when_the_encoder_is_kept(ds, spm):
    request = request_classes(ds, [6])
    unlearned = spm.forget(list(request.ids))
    base = NB.NeighbourIndex(NB.training_features(spm, ds), NB.held_mask(spm, ds))
    shared = NB.index_for(unlearned, ds, request, base=base)
    assert shared.index is base.index and not shared.allowed[list(request.ids)].any() and base.allowed.all()
    ids, _ = shared.search(NB.training_features(spm, ds)[int(request.ids[0])], 20)
    assert not np.isin(ids[0], request.ids).any()
    other = NB.index_for(Linear(ds.num_classes), ds, request, base=base)  # another encoder: its own index
    assert other.index is not base.index and other.allowed.sum() == ds.num_train - len(request)
