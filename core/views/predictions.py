"""What changed after forgetting, as the Predictions page shows it: metrics against the oracles, per-class
accuracy, class transitions, the test images whose prediction changed, and every run of one request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core import bundle, workflow
from core.comparison import changed_predictions, transition_matrix
from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval import metrics as M
from core.eval import probes
from core.models.base import Classifier

METRICS = ("TA", "RA", "FA", "retained_TA", "forgotten_TA", "MIA", "PG", "KL", "AvgGap")
RUN_METRICS = ("TA", "RA", "FA", "MIA", "PG", "AvgGap", "speedup")
ORACLE, ORACLE_SD = "oracle", "oracle sd"  # the table's columns: mean and sd over the finished oracles


@dataclass
class ShownModel:
    """The model a page shows: a by-design model after deletion, or a post-hoc method run."""

    name: str  # as the picker lists it: the model kind, or the run's label (``MethodRun.label``)
    kind: str
    before: Classifier  # the original
    after: Classifier  # after unlearning
    seconds: float | None  # how long unlearning took (None: not measured here, e.g. supplied weights)
    original: bundle.TrainedModel
    run: workflow.MethodRun | None = None  # None: a by-design deletion

    @property
    def method(self) -> str:
        return self.run.method if self.run is not None else f"{self.name}-delete"


@dataclass
class PredictionView:
    """A model before and after forgetting, and the finished oracles (test-set predictions)."""

    before: dict  # the original's metrics, with its gaps to the oracles once one is ready
    after: dict  # the unlearned model's own metrics
    comparison: workflow.Comparison | None  # the unlearned model against the oracles (None: none finished)
    seconds: float  # how long unlearning took
    p_before: np.ndarray
    p_after: np.ndarray
    p_oracle: np.ndarray | None  # the finished oracles' mean probabilities
    per_class: dict[str, np.ndarray]  # model -> test accuracy % per class
    transitions: np.ndarray  # [i, j]: test images predicted i before and j after
    changed: list[dict]  # test images whose predicted class changed, largest confidence shift first


def prediction_view(before: Classifier, after: Classifier, dataset: Dataset, request: ForgetRequest, seconds: float,
                    original: bundle.TrainedModel | None = None, oracles: Sequence[bundle.TrainedModel] = ()
                    ) -> PredictionView:
    """Every number of the page, against every finished oracle (``original``: the stored model ``before`` is,
    the untouched reference of the verdict); predictions come from the models' memoised whole-split arrays."""
    p_before, p_after = before.split_proba(dataset, "test"), after.split_proba(dataset, "test")
    m_before, m_after = M.split_metrics(before, dataset, request), M.split_metrics(after, dataset, request)
    comparison = p_oracle = None
    per_class = {"original": m_before["per_class"], "unlearned": m_after["per_class"]}
    if oracles and original is not None:
        comparison = workflow.compare(after, original, oracles, dataset, request, seconds)
        probs = [o.classifier.split_proba(dataset, "test") for o in oracles]
        p_oracle = np.mean(probs, 0)
        m_before.update(M.gaps_to_oracles(m_before, p_before, [M.split_metrics(o.classifier, dataset, request)
                                                               for o in oracles], probs))
        per_class[f"oracles (mean of {len(oracles)})"] = comparison.oracle_metrics["per_class"]
    return PredictionView(m_before, m_after, comparison, seconds, p_before, p_after, p_oracle, per_class,
                          transition_matrix(p_before, p_after, dataset.num_classes),
                          changed_predictions(p_before, p_after, p_oracle, dataset.y_test))


@dataclass
class ReferenceGaps:
    """The unlearned model against another oracle (e.g. MUNKEY's plain ViT retrained without the request)."""

    name: str
    metrics: dict  # the reference oracle's own metrics
    gaps: dict  # PG, KL and AvgGap of the unlearned model to it

    @property
    def column(self) -> str:
        return f"{self.name} oracle"


def reference_gaps(name: str, view: PredictionView, reference: Classifier, dataset: Dataset,
                   request: ForgetRequest) -> ReferenceGaps:
    m_ref = M.split_metrics(reference, dataset, request)
    return ReferenceGaps(name, m_ref, M.gap_metrics(view.after, view.p_after, m_ref,
                                                    reference.split_proba(dataset, "test")))


def metrics_table(view: PredictionView, references: Sequence[ReferenceGaps] = ()) -> list[dict]:
    """One row per metric: before, after, the finished oracles' mean and sd (for PG and KL, between oracle
    pairs: how far one oracle lies from another), each reference oracle (its own TA/RA/FA/MIA; the unlearned
    model's gaps to it in the PG/KL/AvgGap rows), and what the metric means."""
    comparison = view.comparison
    after = comparison.metrics if comparison is not None else view.after
    spread = (comparison.spread or {}).get("metrics", {}) if comparison is not None else {}
    rows = []
    for name in METRICS:
        if name not in view.after and name not in after:
            continue
        row = {"metric": name, "before": view.before.get(name), "after": after.get(name)}
        if comparison is not None:
            entry = spread.get(name, {})
            row[ORACLE] = entry.get("pairs_mean") if name in ("PG", "KL") else comparison.oracle_metrics.get(name)
            row[ORACLE_SD] = entry.get("pairs_sd" if name in ("PG", "KL") else "oracle_sd")
        for ref in references:
            row[ref.column] = ref.gaps[name] if name in ref.gaps else ref.metrics.get(name)
        row["meaning"] = M.EXPLANATIONS[name]
        rows.append(row)
    return rows


def changed_caption(row: dict, class_names: Sequence[str]) -> str:
    """A changed test image's caption: true class, and each model's class with its confidence."""
    text = (f"true {class_names[row['label']]} | before {class_names[row['before']]} {row['before_conf']:.2f} | "
            f"after {class_names[row['after']]} {row['after_conf']:.2f}")
    if "oracle" in row:
        text += f" | oracle {class_names[row['oracle']]} {row['oracle_conf']:.2f}"
    return text


def run_row(run: str, kind: str, seconds: float, before: dict, comparison: workflow.Comparison) -> dict:
    return {"run": run, "kind": kind, "verdict": comparison.verdict, "oracles": comparison.k, "seconds": seconds,
            "selectivity": probes.selectivity(before, comparison.metrics),
            **{k: comparison.metrics.get(k) for k in RUN_METRICS}}


def runs_table(runs: Sequence[workflow.MethodRun], originals: Mapping[str, Classifier], dataset: Dataset,
               request: ForgetRequest) -> list[dict]:
    """The scored method runs of ``request`` side by side (``originals``: the model each kind started from)."""
    return [run_row(r.label, r.kind, r.seconds, M.split_metrics(originals[r.kind], dataset, request), r.comparison)
            for r in runs if r.comparison is not None and r.kind in originals]


def exposure_captions(most_exposed: Sequence[dict], class_names: Sequence[str]) -> list[str]:
    """Captions of the audit's most exposed forgotten samples (``audit_report``'s ``most_exposed``)."""
    return [f"#{r['id']} {class_names[r['label']]} | exposure {r['exposure']:.0f}" for r in most_exposed]
