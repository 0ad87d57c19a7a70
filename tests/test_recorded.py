"""Recorded oracle predictions (core.recorded): the comparison they give is the trained oracles' comparison, they
refuse what needs weights, a damaged record is named and the oracle trains, and a trained oracle replaces them."""

from dataclasses import replace

import numpy as np
import pytest
from conftest import FAST

from core import bundle, recorded, workflow
from core.backend import Backend
from core.data import request_classes, request_random
from core.store import StoreError


@pytest.fixture
def record_dir(tmp_path, monkeypatch):
    """Records are read only from this folder (not the shipped assets, not the run's store)."""
    monkeypatch.setattr(recorded, "record_dirs", lambda: [tmp_path])
    recorded.load.cache_clear()
    yield tmp_path
    recorded.load.cache_clear()


def recorded_twins(oracles, digits, folder):
    for o in oracles:
        recorded.record(o, digits, folder)
    twins = [recorded.find(o.key, digits) for o in oracles]
    assert all(t is not None and recorded.is_recorded(t) and t.key == recorded.KEY_PREFIX + o.key
               for t, o in zip(twins, oracles))
    return twins


@pytest.mark.parametrize("make_request", [lambda d: request_classes(d, [0]), lambda d: request_random(d, 0.1, 0)],
                         ids=["class0", "random10"])
def test_recorded_predictions_give_the_trained_oracles_comparison(digits, record_dir, make_request):
    request = make_request(digits)
    original = bundle.train_or_load("spm", digits, train_config=FAST)
    oracles = workflow.oracles("spm", digits, request, k=3, train_config=FAST)
    twins = recorded_twins(oracles, digits, record_dir)
    run = workflow.execute("spm-delete", original, digits, request)
    real = workflow.compare(run.model, original, oracles, digits, request)
    rec = workflow.compare(run.model, original, twins, digits, request)
    assert rec.k == 3 and rec.verdict == real.verdict and rec.sentence.split(":")[0] == real.sentence.split(":")[0]
    assert [o["recorded"] for o in rec.oracles] == [True] * 3 and [o["seed"] for o in rec.oracles] == real.oracle_seeds
    for a, b in zip(real.criteria, rec.criteria):
        assert a["name"] == b["name"] and a["effective"] == b["effective"]
        assert b["value"] == pytest.approx(a["value"], rel=0.02, abs=0.02), a["name"]
        assert b["band"]["lo"] == pytest.approx(a["band"]["lo"], rel=0.02, abs=0.05), a["name"]
        assert b["band"]["hi"] == pytest.approx(a["band"]["hi"], rel=0.02, abs=0.05), a["name"]
    for name in ("TA", "RA", "FA", "MIA"):
        assert rec.oracle_metrics[name] == pytest.approx(real.oracle_metrics[name], abs=0.05), name
    for name in ("PG", "AvgGap"):
        assert rec.metrics[name] == pytest.approx(real.metrics[name], abs=0.05), name
    assert rec.metrics["KL"] == pytest.approx(real.metrics["KL"], rel=0.02, abs=1e-3)
    for split in ("forget", "retain", "val"):
        for summary in ("klom", "klom_gauss"):
            assert rec.klom[split][summary]["p95"] == pytest.approx(real.klom[split][summary]["p95"], rel=0.05,
                                                                    abs=0.05), (split, summary)
    for name, attack in real.attacks.items():
        assert rec.attacks[name]["loss_auroc"] == pytest.approx(attack["loss_auroc"], abs=0.1), name
        assert rec.attacks[name]["svc_efficacy"] == pytest.approx(attack["svc_efficacy"], abs=1.0), name


def test_a_recorded_oracle_refuses_what_needs_its_weights(digits, record_dir):
    request = request_classes(digits, [0])
    twin = recorded_twins([workflow.oracle("spm", digits, request, 1, train_config=FAST)], digits, record_dir)[0]
    with pytest.raises(recorded.NeedsWeights, match="recorded predictions, not weights.*train the oracles"):
        twin.classifier.embed(digits.x_test[:4])
    with pytest.raises(recorded.NeedsWeights, match="predict new images"):
        twin.classifier.predict_proba(digits.x_test[:4])
    probs = twin.classifier.split_proba(digits, "train")
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs.argmax(1) == twin.classifier.train_pred).all()


def test_a_damaged_or_foreign_record_is_named_and_the_oracle_trains_instead(digits, record_dir, ray_backend):
    request = request_classes(digits, [0])
    oracle = workflow.oracle("spm", digits, request, 1, train_config=FAST)
    (record_dir / f"{oracle.key}.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(StoreError, match=rf"{oracle.key}\.npz: unreadable.*record-oracles"):
        recorded.find(oracle.key, digits)
    other = workflow.oracle("spm", digits, request, 2, train_config=FAST)
    recorded.record(other, digits, record_dir)
    (record_dir / f"{other.key}.npz").rename(record_dir / f"{oracle.key}.npz")  # a record filed under another key
    with pytest.raises(StoreError, match=f"records {other.key} .*not {oracle.key}"):
        recorded.find(oracle.key, digits)
    # an oracle no test trains (its own recipe), whose record is damaged: its job trains it and says why
    recipe = replace(FAST, epochs=2)
    key = bundle.resolve("spm", digits, None, workflow.oracle_train_config("spm", digits, 1, recipe), request)[2]
    (record_dir / f"{key}.npz").write_bytes(b"\x00" * 64)
    job = workflow.oracle_jobs(ray_backend, "spm", digits, request, k=1, train_config=recipe, recorded=True)[0]
    assert not job.key.startswith("recorded:") and f"{key}.npz" in job.note
    assert "Training this oracle instead" in job.note
    assert job.wait(300) is not None and job.finished_ok and not recorded.is_recorded(job.result)


def test_the_records_of_every_class_are_read_ahead_and_a_damaged_one_is_left_to_be_named(digits, record_dir):
    """What the Forget page reads once it has loaded its models, before any click: every class's records."""
    oracles = workflow.oracles("spm", digits, request_classes(digits, [0]), k=3, train_config=FAST)
    for o in oracles:
        recorded.record(o, digits, record_dir)
    damaged = bundle.resolve("spm", digits, None, workflow.oracle_train_config("spm", digits, 1, FAST),
                             request_classes(digits, [1]))[2]
    (record_dir / f"{damaged}.npz").write_bytes(b"\x00" * 64)
    recorded.load.cache_clear()
    assert workflow.read_class_records("spm", digits, train_config=FAST) == 3
    assert recorded.load.cache_info().currsize == 3  # the click on class 0 finds them read
    with pytest.raises(StoreError, match=rf"{damaged}\.npz: unreadable"):
        recorded.find(damaged, digits)


def test_a_trained_oracle_comes_before_its_record(digits, record_dir, monkeypatch):
    request = request_classes(digits, [0])
    oracles = workflow.oracles("spm", digits, request, k=2, train_config=FAST)
    recorded_twins(oracles, digits, record_dir)
    engine = Backend()
    try:
        jobs = workflow.oracle_jobs(engine, "spm", digits, request, k=2, train_config=FAST, recorded=True)
        assert all(j.wait(60) is not None and not recorded.is_recorded(j.result) for j in jobs)  # stored: loaded
        monkeypatch.setattr(bundle, "is_available", lambda *a, **k: False)  # as on a fresh clone
        fresh = Backend()
        try:
            jobs = workflow.oracle_jobs(fresh, "spm", digits, request, k=2, train_config=FAST, recorded=True)
            assert all(j.finished_ok and recorded.is_recorded(j.result) for j in jobs)
            assert [workflow.train_seed(j.result) for j in jobs] == [workflow.train_seed(o) for o in oracles]
        finally:
            fresh.shutdown()
    finally:
        engine.shutdown()


def test_a_record_is_read_without_the_ast_module_and_odd_files_are_refused(digits, record_dir, monkeypatch):
    """Records are read ahead in the background while sessions compile pages, and CPython 3.11's AST builder is not
    safe in two threads at once: reading one must parse nothing with ``ast`` (numpy's .npy header reader does). A
    record that decompresses to more than one of this dataset's size can hold, or holds a pickled array, is
    refused and named."""
    import ast

    oracle = workflow.oracle("spm", digits, request_classes(digits, [2]), 1, train_config=FAST)
    path = recorded.record(oracle, digits, record_dir)
    recorded.load.cache_clear()

    def no_ast(*args, **kwargs):
        raise AssertionError("ast used while reading a record")

    with monkeypatch.context() as patched:
        patched.setattr(ast, "parse", no_ast)
        patched.setattr(ast, "literal_eval", no_ast)
        twin = recorded.find(oracle.key, digits)
    np.testing.assert_allclose(twin.classifier.split_proba(digits, "test"),
                               oracle.classifier.split_proba(digits, "test"), atol=2e-3)
    with np.load(path) as z:
        good = {name: z[name] for name in z.files}
    for odd, found in (({"test_logp": np.zeros((5000, 1000), np.float32)}, "larger than a record of this dataset"),
                       ({"meta": np.array([{"a": 1}], dtype=object)}, "meta is not an array as numpy.savez writes")):
        np.savez_compressed(path, **{**good, **odd}, allow_pickle=True)
        recorded.load.cache_clear()
        with pytest.raises(StoreError, match=rf"{oracle.key}\.npz: unreadable \({found}"):
            recorded.find(oracle.key, digits)


def test_the_shipped_records_are_those_of_the_default_models_oracles():
    """Every class of Fashion-MNIST has its three recorded SPM oracles under the keys today's recipe gives: a change
    of recipe or data that would leave the teacher's first comparison training for minutes fails here."""
    from core.data import load_dataset
    from core.data.sources import SYSTEM_DIRS

    if not any(d.is_dir() for d in SYSTEM_DIRS):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    recorded.load.cache_clear()
    fashion = load_dataset("fashion-mnist")
    assert workflow.read_class_records("spm", fashion) == fashion.num_classes * len(workflow.oracle_offsets()) == 30
    recorded.load.cache_clear()
