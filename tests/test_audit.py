"""The audit report: computed from the models, consistent with the metrics, the verdict and the stored weights,
and readable without the app."""

import hashlib
import json

import numpy as np
import pytest

from core import workflow
from core.data import request_classes, request_random
from core.eval import audit
from core.eval import metrics as M


@pytest.fixture(scope="module")
def spm_oracles(digits):
    """Two SPM oracles (seeds 1 and 2): enough for a verdict, and cheaper to train than the default three."""
    return workflow.oracles("spm", digits, request_random(digits, 0.1, 7), 2)


def test_mean_exposure_is_the_mia_auroc(spm_model, digits):
    for request in (request_random(digits, 0.1, 7), request_classes(digits, [4])):
        model = spm_model.forget(request.ids)
        test_p, train_p = model.split_proba(digits, "test"), model.split_proba(digits, "train")
        exposure = audit.sample_exposure(train_p, test_p, digits, request)
        assert exposure.shape == (len(request),) and ((0 <= exposure) & (exposure <= 100)).all()
        assert exposure.mean() == pytest.approx(M.model_metrics(test_p, train_p, digits, request)["MIA"], abs=1e-9)


def test_exposure_counts_ties_half(digits):
    request = request_random(digits, 0.1, 3)
    uniform = np.full((digits.num_train, digits.num_classes), 1 / digits.num_classes)
    test = np.full((len(digits.y_test), digits.num_classes), 1 / digits.num_classes)
    np.testing.assert_allclose(audit.sample_exposure(uniform, test, digits, request), 50.0)


def test_report_of_an_spm_deletion(spm_oracles, digits):
    request = request_random(digits, 0.1, 7)
    original = workflow.original("spm", digits)
    spm_model = original.classifier
    unlearned = spm_model.forget(request.ids)
    comparison = workflow.compare(unlearned, original, spm_oracles, digits, request, 0.002)
    report = audit.audit_report(digits, request, spm_model, unlearned, original.meta, "spm-delete", {}, 0.002,
                                comparison)
    json.dumps(report)  # JSON-ready throughout
    assert report["oracles"]["k"] == 2 and report["oracles"]["seeds"] == [1, 2] and report["original"]["seed"] == 0
    assert report["verdict"]["verdict"] == comparison.verdict and report["verdict"]["rule"] == comparison.rule
    assert report["verdict"]["criteria"] and "Sample request" in report["verdict"]["scenario_rule"]
    # a deletion from the memory moves no weight: the unlearned network is the original's
    weights = report["unlearned"]["weights_sha256"]
    assert weights == original.meta["weights_sha256"] == report["original"]["weights_sha256"]
    memory = report["memory"]
    assert memory["forgotten_in_memory"] == 0 and memory["counts_match_rebuilt"]
    assert memory["memory_entries"] == digits.num_train - len(request)
    assert memory["sums_rel_diff_from_rebuilt"] < 1e-12  # incremental deletion equals rebuilding the sums
    assert spm_model.memory_check(request.ids)["forgotten_in_memory"] == len(request)
    expected = hashlib.sha256("\n".join(map(str, request.ids)).encode()).hexdigest()
    assert report["request"]["ids_sha256"] == expected
    rows = {r["metric"]: r for r in report["comparison"]}
    assert rows["FA"]["after"] == pytest.approx(report["metrics"]["after"]["FA"])
    assert rows["FA"]["gap"] == pytest.approx(abs(rows["FA"]["after"] - rows["FA"]["oracle_mean"]))
    fa = [M.split_metrics(o.classifier, digits, request)["FA"] for o in spm_oracles]
    assert rows["FA"]["oracle_mean"] == pytest.approx(np.mean(fa)) and rows["FA"]["pairs_mean"] == abs(fa[0] - fa[1])
    top = report["exposure"]["most_exposed"]
    assert len(top) == 20 and all(a["exposure"] >= b["exposure"] for a, b in zip(top, top[1:]))
    assert {r["id"] for r in top} <= set(request.ids)
    text = audit.report_markdown(report, digits.class_names)
    assert expected in text and "| FA |" in text and "forgotten samples still among them: **0**" in text
    assert comparison.sentence in text and "seeds 1, 2" in text
    where = report["versions"]  # a retrain reproduces bit for bit only on the same processor and kernels
    assert where["cpu"] and f"on {where['cpu']} with its {where['cpu_kernels']} kernels" in text


@pytest.mark.slow
def test_report_hashes_the_stored_unlearned_weights_of_a_post_hoc_run(digits, parametric_model):
    """The report names the unlearned model by the SHA-256 of its stored weights file, not the original's."""
    request = request_classes(digits, [3])
    original = workflow.original("parametric", digits)
    run = workflow.execute("ga", original, digits, request)
    oracles = workflow.oracles("parametric", digits, request, 3)
    workflow.record(workflow.score(run, original, oracles, digits), digits)
    stored = workflow.store_unlearned(run)
    report = audit.audit_report(digits, request, original.classifier, run.model, original.meta, "ga", {}, run.seconds,
                                run.comparison, stored)
    file_hash = hashlib.sha256((stored.path / "weights.safetensors").read_bytes()).hexdigest()
    assert report["unlearned"]["weights_sha256"] == file_hash == run.weights_sha256
    assert report["unlearned"]["weights_sha256"] != report["original"]["weights_sha256"]
    assert report["oracles"]["seeds"] == [1, 2, 3] and len(report["membership"]["rows"]) == len(request)
    text = audit.report_markdown(report)
    assert file_hash in text and f"**{run.comparison.verdict}**" in text
    # the file the Predictions page offers is those bytes: uploaded back, it predicts as the judged model does
    from core import store
    from core.validate import checkpoint_model

    offered = store.verified_weights(stored)
    assert hashlib.sha256(offered).hexdigest() == file_hash
    uploaded = checkpoint_model(offered, "parametric", digits, "audit.safetensors")
    np.testing.assert_allclose(uploaded.classifier.split_proba(digits, "test"), run.model.split_proba(digits, "test"),
                               atol=1e-5)
    altered = store.StoredModel(stored.key, stored.path, {**stored.meta, "weights_sha256": "0" * 64})
    with pytest.raises(store.StoreError, match="not the 0000000000000000… recorded when they were saved"):
        store.verified_weights(altered)


def test_weights_unlearned_elsewhere_are_judged_as_the_run_that_made_them(digits, parametric_model):
    """An auditor supplies a file of unlearned weights: it is judged against the request's oracles exactly as the
    run that made it (same metrics, same verdict), the report names the file and the SHA-256 of its bytes, and the
    file is not copied into the store. The original's own weights supplied as "unlearned" are caught."""
    from core import store

    request = request_classes(digits, [3])
    original = workflow.original("parametric", digits)
    oracles = workflow.oracles("parametric", digits, request, 3)
    damp = workflow.score(workflow.execute("damp", original, digits, request), original, oracles, digits)
    data = store.verified_weights(workflow.store_unlearned(damp))
    supplied = workflow.score(workflow.supplied_run(original, digits, request, data, "vendor.safetensors"), original,
                              oracles, digits)
    assert supplied.method == workflow.SUPPLIED and supplied.label == "supplied (vendor.safetensors)"
    assert supplied.comparison.verdict == damp.comparison.verdict
    assert supplied.comparison.sentence == damp.comparison.sentence
    for name in ("TA", "RA", "FA", "MIA", "AvgGap"):
        assert supplied.comparison.metrics[name] == pytest.approx(damp.comparison.metrics[name], abs=1e-6), name
    assert supplied.comparison.metrics["FA"] < 5 and supplied.comparison.metrics["RA"] > 80  # forgot, kept the rest
    assert "seconds" not in supplied.comparison.metrics and "speedup" not in supplied.comparison.metrics
    assert workflow.store_unlearned(supplied) is None  # the user's file stays theirs
    report = audit.audit_report(digits, request, original.classifier, supplied.model, original.meta, supplied.method,
                                {"file": "vendor.safetensors", "sha256": supplied.weights_sha256}, None,
                                supplied.comparison)
    assert report["unlearned"]["weights_sha256"] == hashlib.sha256(data).hexdigest() == supplied.weights_sha256
    assert report["unlearned"]["supplied_file"] == "vendor.safetensors" and report["method"]["seconds"] is None
    text = audit.report_markdown(report)
    assert "the file `vendor.safetensors`" in text and "time not measured here" in text
    from core import report as report_files

    assert "vendor.safetensors" in report_files.report_html(report, digits.class_names)

    unchanged = workflow.score(workflow.supplied_run(original, digits, request, store.verified_weights(
        store.find_model(original.key)), "unchanged.safetensors"), original, oracles, digits)
    assert unchanged.comparison.verdict == "not forgotten" and unchanged.comparison.metrics["FA"] > 80
    assert "nearer the original's" in unchanged.comparison.sentence
    with pytest.raises(store.StoreError, match="vendor.safetensors"):
        workflow.supplied_run(original, digits, request, data[:-9], "vendor.safetensors")
    with pytest.raises(ValueError, match="spm forgets by deleting samples from its memory.*the parametric model"):
        workflow.supplied_run(workflow.original("spm", digits), digits, request, data, "vendor.safetensors")


def test_report_without_an_oracle_says_so(parametric_model, digits):
    request = request_classes(digits, [2])
    meta = {"kind": "parametric", "key": "p", "weights_sha256": "x"}
    report = audit.audit_report(digits, request, parametric_model, parametric_model, meta, "none", None, 0.0)
    assert "memory" not in report and "comparison" not in report and "verdict" not in report
    assert "there is no verdict" in audit.report_markdown(report)


@pytest.mark.slow
def test_cli_audit_writes_an_html_report_that_needs_nothing_outside_it(tmp_path, digits, parametric_model):
    """``python -m core audit``: the files, the stored weights' hash, the residue and relearn sections, and an HTML
    page that carries its own plotly.js and loads nothing from outside."""
    import re

    from core import store
    from tests.test_cli import cli

    out = tmp_path / "report"
    code, result = cli("audit", "--dataset", "digits", "--model", "parametric", "--classes", "3", "--method", "ga",
                       "--oracles", "3", "--relearn", "--out", str(out))
    assert code == 0, result
    assert sorted(p.name for p in out.iterdir()) == ["audit.html", "audit.json", "audit.md", "membership.csv"]
    report = json.loads((out / "audit.json").read_text())
    key = f"unlearned-{result['run_key']}-{result['unlearned_weights_sha256'][:16]}"
    stored = next(p for p in store.model_dirs(key) if p.exists())
    file_hash = hashlib.sha256((stored / "weights.safetensors").read_bytes()).hexdigest()
    assert report["unlearned"]["weights_sha256"] == result["unlearned_weights_sha256"] == file_hash
    assert report["oracles"]["seeds"] == [1, 2, 3] and report["verdict"]["verdict"] == result["verdict"]
    assert [m["measure"] for m in report["weights_residue"]["measures"]] == ["knn_acc"]
    assert [r["model"] for r in report["relearn"]["rows"]][:2] == ["unlearned", "oracle 1 (seed 1)"]
    page = (out / "audit.html").read_text()
    assert page.count('class="plotly-graph-div"') == 3  # verdict bands, relearn curves, CKA per layer
    assert not re.search(r"<script[^>]+src=", page) and "<link" not in page  # plotly.js is inlined
    assert file_hash in page and report["request"]["ids_sha256"] in page
    assert (out / "membership.csv").read_text().count("\n") == len(request_classes(digits, [3])) + 1


@pytest.mark.slow
def test_cli_audits_weights_unlearned_elsewhere(tmp_path, digits, parametric_model):
    """``audit --weights FILE``: the supplied file is judged as the run that made it, and the report names the
    file as the user gave it and the SHA-256 of its bytes."""
    from core import store
    from tests.test_cli import cli

    request = request_classes(digits, [3])
    original = workflow.original("parametric", digits)
    damp = workflow.score(workflow.execute("damp", original, digits, request), original,
                          workflow.oracles("parametric", digits, request, 3), digits)
    weights = tmp_path / "theirs.safetensors"
    weights.write_bytes(store.verified_weights(workflow.store_unlearned(damp)))
    out = tmp_path / "report"
    code, result = cli("audit", "--dataset", "digits", "--model", "parametric", "--classes", "3", "--weights",
                       str(weights), "--oracles", "3", "--out", str(out))
    assert code == 0, result
    report = json.loads((out / "audit.json").read_text())
    assert report["unlearned"]["supplied_file"] == str(weights) and report["method"]["name"] == "supplied"
    assert report["unlearned"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert result["verdict"] == damp.comparison.verdict and result["sentence"] == damp.comparison.sentence
    assert report["metrics"]["after"]["FA"] == pytest.approx(damp.comparison.metrics["FA"], abs=1e-6)
    assert str(weights) in (out / "audit.md").read_text()


def test_the_html_report_escapes_what_it_quotes(parametric_model, digits):
    from core import report as R

    request = request_classes(digits, [2])
    meta = {"kind": "parametric", "key": "p", "weights_sha256": "x"}
    report = audit.audit_report(digits, request, parametric_model, parametric_model, meta, "<script>alert(1)</script>",
                                None, 0.0)
    page = R.report_html(report, digits.class_names)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "plotly-graph-div" not in page  # no oracle: no figure, and no plotly.js either
    assert set(R.audit_files(report)) == {"audit.html", "audit.json", "audit.md"}
