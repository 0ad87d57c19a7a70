"""The audit report: computed from the models, consistent with the metrics, and readable without the app."""

import hashlib
import json

import numpy as np
import pytest

from core import workflow
from core.data import request_classes, request_random
from core.eval import audit
from core.eval import metrics as M


@pytest.fixture(scope="module")
def spm_oracle(digits):
    return workflow.oracle("spm", digits, request_random(digits, 0.1, 7))


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


def test_report_of_an_spm_deletion(spm_model, spm_oracle, digits):
    request = request_random(digits, 0.1, 7)
    unlearned = spm_model.forget(request.ids)
    meta = {"kind": "spm", "key": "spm-test", "weights_sha256": "abc", "config": {}, "train_config": {}}
    report = audit.audit_report(digits, request, spm_model, unlearned, meta, "spm-delete", {}, 0.002,
                                spm_oracle.classifier, spm_oracle.meta)
    json.dumps(report)  # JSON-ready throughout
    memory = report["memory"]
    assert memory["forgotten_in_memory"] == 0 and memory["counts_match_rebuilt"]
    assert memory["memory_entries"] == digits.num_train - len(request)
    assert memory["sums_rel_diff_from_rebuilt"] < 1e-12  # incremental deletion equals rebuilding the sums
    assert spm_model.memory_check(request.ids)["forgotten_in_memory"] == len(request)
    expected = hashlib.sha256("\n".join(map(str, request.ids)).encode()).hexdigest()
    assert report["request"]["ids_sha256"] == expected
    rows = {r["metric"]: r for r in report["comparison"]}
    assert rows["FA"]["after"] == pytest.approx(report["metrics"]["after"]["FA"])
    assert rows["FA"]["gap"] == pytest.approx(abs(rows["FA"]["after"] - rows["FA"]["oracle"]))
    top = report["exposure"]["most_exposed"]
    assert len(top) == 20 and all(a["exposure"] >= b["exposure"] for a, b in zip(top, top[1:]))
    assert {r["id"] for r in top} <= set(request.ids)
    text = audit.report_markdown(report, digits.class_names)
    assert expected in text and "| FA |" in text and "forgotten samples still among them: **0**" in text


def test_report_without_an_oracle_says_so(parametric_model, digits):
    request = request_classes(digits, [2])
    meta = {"kind": "parametric", "key": "p", "weights_sha256": "x"}
    report = audit.audit_report(digits, request, parametric_model, parametric_model, meta, "none", None, 0.0)
    assert "memory" not in report and "comparison" not in report
    assert "not trained yet" in audit.report_markdown(report)
