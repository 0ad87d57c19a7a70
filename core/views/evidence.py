"""The evidence behind a verdict, as the Predictions page and the audit report show it (issue 14; EVIDENCE.md).

``evidence_view`` turns a ``workflow.Comparison`` into tables: the criteria the verdict rests on (each band, the
method's and the original's value), each metric's oracle spread, KLoM per split, the offline-LiRA attack summaries
(TPR at fixed FPR), the population attacks (loss threshold and SVC MIA-efficacy) and the ranked per-sample table.
``relearn_view`` measures relearn time for the unlearned model and each oracle (slow: on demand).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core import bundle, workflow
from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval import audit
from core.eval import metrics as M
from core.eval import relearn as R
from core.eval import residue as RS
from core.eval.evidence import in_verdict
from core.eval.klom import INDICATIVE_KLOM_N
from core.models.base import Classifier
from core.models.parametric import ParametricClassifier
from core.report import criteria_band_rows

PER_SAMPLE_SIGMA_K = 64  # EVIDENCE §2a: a per-sample variance needs K ≳ 64 oracles; fewer use one global σ
SPLITS = {"forget": "forget (D_f)", "retain": "retain (D_r)", "val": "validation (test set)"}
TONES = {"looks unseen": "success", "not forgotten": "error", "over-forgotten": "warning", "inconclusive": "info"}


@dataclass
class EvidenceView:
    """One comparison's verdict and the evidence under it, as tables of plain rows."""

    verdict: str
    sentence: str
    tone: str  # how to draw the verdict: success, error, warning or info
    k: int
    oracle_seeds: list[int]
    scenario: str
    scenario_rule: str
    rule: str
    criteria: list[dict]  # the measures of the verdict: method, band, oracles, original, where each lies
    bands: list[dict]  # the same measures for charts.criteria_bands: values, band, oracle values, original
    spread: list[dict]  # per metric: distance to the oracle mean beside the oracle-to-oracle distances
    klom: list[dict]  # per split: KLoM-Gauss and KLoM P50 / P95
    attacks: list[dict]  # offline LiRA on D_f vs held-out samples: AUC, balanced accuracy, TPR at 1% and 5% FPR
    membership: list[dict]  # ranked per-sample table (most member-like first)
    notes: list[str]  # which figures are indicative, and why
    comparison: workflow.Comparison = field(repr=False)

    @property
    def population(self) -> list[dict]:
        """Loss-threshold AUROC and SVC MIA-efficacy per model (computed when first read: ``Comparison.attacks``)."""
        return population_rows(self.comparison.attacks)


def _lies(position: str, effective: str, distance: bool) -> str:
    if distance and position == "above":
        return f"above (D_f's margins {effective} the oracles')"
    return {"inside": "inside the band", "above": "above the band", "below": "below the band"}.get(position,
                                                                                                     "unknown")


def criteria_rows(criteria: Sequence[dict]) -> list[dict]:
    """The verdict's measures as a table: the method's value, its band (where a fresh oracle falls 99% of the
    time), the oracles' mean ± sd over m values, the original's value, where each lies, and whether the measure
    decides the verdict (what the model keeps is shown beside it)."""
    rows = []
    for c in criteria:
        b = c["band"]
        rows.append({"measure": c["label"], "in the verdict": in_verdict(c), "unit": c["unit"] or "-",
                     "method": c["value"], "band low": b["lo"],
                     "band high": b["hi"], "oracle mean": b["mean"], "oracle sd": b["sd"], "oracles": b["m"],
                     "original": c["original"], "method lies": _lies(c["position"], c["effective"], c["distance"]),
                     "original lies": _lies(c["original_position"], "above", False)})
    return rows


def spread_rows(spread: dict | None) -> list[dict]:
    """Per metric: the method's value, its distance to the oracle mean and its mean distance to each oracle,
    beside the oracle-to-oracle distances (mean ± sd over pairs), where it lies among those pair distances
    (percentile) and in the oracles' band."""
    if not spread:
        return []
    rows = []
    for name, e in spread["metrics"].items():
        level = "oracle_mean" in e
        rows.append({"metric": name, "method": e["method"],
                     "oracle mean": e.get("oracle_mean"), "oracle sd": e.get("oracle_sd"),
                     "distance to oracle mean": e["gap"] if level else None,
                     "mean distance to each oracle": e["to_oracles"] if level else e["method"],
                     "oracle-to-oracle mean": e["pairs_mean"], "oracle-to-oracle sd": e["pairs_sd"],
                     "pairs": e["n_pairs"], "percentile among pairs": e["percentile"],
                     "method lies": e["position"] if level else
                     ("unknown" if e["within"] is None else "inside the pairs' band" if e["within"] else "above")})
    return rows


def klom_rows(klom: dict | None) -> list[dict]:
    """Per split: KLoM-Gauss (the small-K stand-in, with its P95 under no difference) and the reference KLoM,
    P50 and P95 over samples, and how many models each side has."""
    if not klom:
        return []
    rows = []
    for split, e in klom.items():
        g = e.get("klom_gauss", {})
        rows.append({"split": SPLITS.get(split, split), "samples": e["klom"]["n"],
                     "KLoM-Gauss P50": g.get("p50"), "KLoM-Gauss P95": g.get("p95"),
                     "P95 if no difference": g.get("null_p95"), "KLoM P50": e["klom"]["p50"],
                     "KLoM P95": e["klom"]["p95"], "models (method, oracles)": ", ".join(map(str, e["n_models"])),
                     "indicative": e["indicative"]})
    return rows


def _attack_row(model: str, s: dict) -> dict:
    return {"model": model, "AUC %": s["auc"], "balanced accuracy %": s["balanced_acc"],
            **{f"TPR at {f} FPR %": t["tpr"] for f, t in s["tpr_at"].items()},
            "mean z on D_f": s["mean_z"], "flagged % (z > 2)": s["flagged"],
            "D_f / held-out": f"{s['n_pos']} / {s['n_neg']}"}


def attack_rows(membership: dict | None) -> list[dict]:
    """Offline LiRA against the oracles (D_f vs class-matched held-out test samples, both on the judged model):
    the method, the untouched original (a positive control) and each oracle left out and scored against the
    others (what no memory of D_f looks like)."""
    if not membership:
        return []
    rows = [_attack_row("method", membership["method"]), _attack_row("original", membership["original"])]
    rows += [_attack_row(f"oracle {i} left out", s) for i, s in enumerate(membership["oracles_loo"], 1)]
    return rows


def population_rows(attacks: dict) -> list[dict]:
    """Per model: the loss-threshold AUROC and the SVC MIA-efficacy (% of D_f called non-member; closer to the
    oracles' is better, not higher), with the oracles' mean ± sd as the last row."""
    rows = [{"model": name, "loss-attack AUROC %": a["loss_auroc"], "SVC MIA-efficacy %": a["svc_efficacy"]}
            for name, a in attacks.items()]
    oracle = [r for r in rows if r["model"].startswith("oracle")]
    if len(oracle) > 1:
        rows.append({"model": f"oracles: mean ± sd (k = {len(oracle)})",
                     **{c: f"{np.mean([r[c] for r in oracle]):.2f} ± {np.std([r[c] for r in oracle], ddof=1):.2f}"
                        for c in ("loss-attack AUROC %", "SVC MIA-efficacy %")}})
    return rows


def _notes(comparison: workflow.Comparison) -> list[str]:
    k, notes = comparison.k, []
    if k < 2:
        notes.append(f"With {k} oracle there is no spread: the verdict waits for a second one.")
    elif comparison.membership is None:
        notes.append(f"Per-sample measures (membership AUC, z, KLoM-Gauss) need 3 oracles; {k} have finished.")
    if comparison.klom and k < INDICATIVE_KLOM_N:
        notes.append(f"KLoM with {k} oracles is indicative (its reference uses ≥ {INDICATIVE_KLOM_N} models per "
                     "side); KLoM-Gauss is the small-K form, read against its P95 if no difference.")
    if comparison.membership and k < PER_SAMPLE_SIGMA_K:
        notes.append(f"Per-sample z uses one global σ over samples: a per-sample σ needs ≳ {PER_SAMPLE_SIGMA_K} "
                     "oracles (Carlini et al. 2022).")
        if any(t["indicative"] for t in comparison.membership["method"]["tpr_at"].values()):
            notes.append("TPR at 1% FPR is indicative: fewer than 1,000 held-out samples make the threshold coarse.")
    return notes


def evidence_view(comparison: workflow.Comparison) -> EvidenceView:
    """Everything the verdict panel draws, from one comparison."""
    bands = criteria_band_rows(comparison.criteria)
    membership = comparison.membership or {}
    return EvidenceView(comparison.verdict, comparison.sentence, TONES[comparison.verdict], comparison.k,
                        comparison.oracle_seeds, comparison.scenario, comparison.scenario_rule, comparison.rule,
                        criteria_rows(comparison.criteria), bands, spread_rows(comparison.spread),
                        klom_rows(comparison.klom), attack_rows(comparison.membership),
                        list(membership.get("rows", [])), _notes(comparison), comparison)


# ---- relearn time ---------------------------------------------------------------------------------------------

@dataclass
class RelearnView:
    """Fine-tuning steps on D_f until the forgotten knowledge returns, for the unlearned model and each oracle."""

    metric: str  # "accuracy" (class requests) or "loss" (sample requests)
    target: float
    target_text: str
    rows: list[dict]  # per model: steps (None: not within the cap), reached, cap
    ain: dict  # anamnesis_index: steps(method) / mean steps(oracles)
    curves: dict[str, list]  # model -> [[step, value], ...]


def _relearn_setting(original: Classifier, dataset: Dataset, request: ForgetRequest) -> dict:
    """What relearning is measured on (EVIDENCE §5 dashboard defaults): a class request evaluates the forgotten
    classes' test images until their accuracy reaches (1 − α) of the original's; a sample request evaluates D_f
    until its mean cross-entropy falls to the original's (the oracles already classify most of D_f right)."""
    ids = np.asarray(request.ids)
    x, y = dataset.x_train[ids], dataset.y_train[ids]
    if request.classes:
        rows = np.flatnonzero(np.isin(dataset.y_test, request.classes))
        target = R.relearn_target(original.split_proba(dataset, "test")[rows], dataset.y_test[rows])
        return {"x": x, "y": y, "eval_x": dataset.x_test[rows], "eval_y": dataset.y_test[rows], "metric": "accuracy",
                "target": target, "text": f"the forgotten classes' test accuracy ≥ {target:.1f}% (95% of the "
                                          "original's)"}
    target = float(M.sample_loss(original.split_proba(dataset, "train")[ids], y).mean())
    return {"x": x, "y": y, "eval_x": None, "eval_y": None, "metric": "loss", "target": target,
            "text": f"mean cross-entropy on D_f ≤ {target:.4f} (the original's)"}


def _memo(model: Classifier) -> dict:
    return model.__dict__.setdefault("_relearn", {})


def relearn_applies(model: Classifier) -> bool:
    """Relearn time fine-tunes weights: parametric models only."""
    return isinstance(model, ParametricClassifier)


def relearn_known(after: Classifier, oracles: Sequence[bundle.TrainedModel], dataset: Dataset,
                  request: ForgetRequest) -> bool:
    """Whether ``relearn_view`` would answer at once (every model's relearn run is memoised)."""
    key = (dataset.fingerprint(), request.key())
    return all(key in _memo(m) for m in (after, *(o.classifier for o in oracles)))


def relearn_view(after: Classifier, original: bundle.TrainedModel, oracles: Sequence[bundle.TrainedModel],
                 dataset: Dataset, request: ForgetRequest) -> RelearnView:
    """Relearn time (``relearn.relearn_time``, same data order and optimiser for every model) of the unlearned
    model and each oracle, and the Anamnesis Index (Chundawat et al. 2023): ≈1 ideal, ≪1 residual knowledge.
    Memoised on each (immutable) model."""
    if not relearn_applies(after):
        raise TypeError(f"relearn time fine-tunes a parametric network; {type(after).__name__} forgets by design")
    if not oracles:
        raise ValueError("relearn time needs at least one finished oracle to compare with")
    setting = _relearn_setting(original.classifier, dataset, request)
    key = (dataset.fingerprint(), request.key())
    models = {"unlearned": after, **{f"oracle {i} (seed {workflow.train_seed(o)})": o.classifier
                                     for i, o in enumerate(oracles, 1)}}
    runs = {}
    for name, model in models.items():
        memo = _memo(model)
        if key not in memo:
            memo[key] = R.relearn_time(model, setting["x"], setting["y"], setting["target"], setting["metric"],
                                       setting["eval_x"], setting["eval_y"])
        runs[name] = memo[key]
    rows = [{"model": n, "steps": r["steps"], "reached": r["reached"], "cap": r["cap"]} for n, r in runs.items()]
    ain = R.anamnesis_index(runs["unlearned"], [r for n, r in runs.items() if n != "unlearned"])
    view = RelearnView(setting["metric"], setting["target"], setting["text"], rows, ain,
                       {n: r["curve"] for n, r in runs.items()})
    after.__dict__.setdefault("_relearn_view", {})[key] = view
    return view


def measured_for_report(after: Classifier, dataset: Dataset, request: ForgetRequest) -> dict:
    """What was measured on demand for ``after`` and ``request``, as ``audit.audit_report`` takes it: ``residue``
    and ``relearn`` (absent when not measured)."""
    key = (dataset.fingerprint(), request.key())
    out = {}
    if key in after.__dict__.get("_residue", {}):
        out["residue"] = after.__dict__["_residue"][key][1]
    view = after.__dict__.get("_relearn_view", {}).get(key)
    if view is not None:
        out["relearn"] = {"metric": view.metric, "target": view.target, "target_text": view.target_text,
                          "rows": view.rows, "ain": view.ain, "curves": view.curves}
    return out


# ---- what the weights alone reveal -------------------------------------------------------------------------

@dataclass
class ResidueView:
    """``residue.residue`` of the shown model as tables, with a sentence that reads them."""

    k: int
    sentence: str
    tone: str  # st.success / st.warning / st.info
    measures: list[dict]
    cka: list[dict]


def _residue_sentence(measures: list[dict], cka: list[dict], k: int, moved_weights: bool) -> tuple[str, str]:
    """The measures read in one sentence; CKA layers outside the pairs' band are named after it, as a pointer."""
    above = [m for m in measures if m["position"] == "above"]
    far = [r["layer"] for r in cka if r["within"] is False]
    same = "" if moved_weights else "The deletion moved no weight, so these are the original's own numbers. "
    if above:
        sentence, tone = same + "The weights alone still reveal the forgotten data: " + "; ".join(
            f"{m['label']} {m['model']:.1f} is above the oracles' band (up to {m['band'][1]:.1f})" for m in above
        ) + ".", "warning"
    else:
        sentence, tone = same + f"Within the spread of {k} oracles: the weights alone show no more of the forgotten " \
            "data than a model retrained without it" + (" (few oracles make a wide band)." if k < 5 else "."), "success"
    if far:
        sentence += (f" The representation at {', '.join(far)} lies further from the oracles than they lie from one "
                     "another (1 − CKA; oracle pairs share models, so read this as a pointer).")
    return sentence, tone


def residue_known(after: Classifier, dataset: Dataset, request: ForgetRequest) -> bool:
    return (dataset.fingerprint(), request.key()) in after.__dict__.get("_residue", {})


def residue_view(after: Classifier, original: bundle.TrainedModel, oracles: Sequence[bundle.TrainedModel],
                 dataset: Dataset, request: ForgetRequest) -> ResidueView:
    """What the unlearned model's weights alone still reveal (``core.eval.residue``) against the finished
    oracles; memoised on the (immutable) model per request and oracle set."""
    key = (dataset.fingerprint(), request.key())
    memo = after.__dict__.setdefault("_residue", {})
    oracle_keys = tuple(o.key for o in oracles)
    if memo.get(key, (None,))[0] != oracle_keys:
        memo[key] = (oracle_keys, RS.residue(after, original.classifier, [o.classifier for o in oracles], dataset,
                                             request))
    result = memo[key][1]
    moved = any(m["model"] != m["original"] for m in result["measures"]) or any(
        r.get("original_to_oracles") != r["to_oracles"] for r in result["cka"])
    sentence, tone = _residue_sentence(result["measures"], result["cka"], result["oracle_k"], moved)
    measures = [{"measure": m["label"], "unlearned": m["model"], "original": m["original"],
                 "oracles (mean)": m["oracle_mean"], "oracles (sd)": m["oracle_sd"], "band low": m["band"][0],
                 "band high": m["band"][1], "position": m["position"]} for m in result["measures"]]
    return ResidueView(result["oracle_k"], sentence, tone, measures, result["cka"])


def audit_view(dataset: Dataset, request: ForgetRequest, before: Classifier, after: Classifier, original_meta: dict,
               method: str, config: dict, seconds: float, comparison=None, stored=None) -> dict:
    """The audit report of ``after`` (``audit.audit_report``), memoised on ``after`` per request, method config,
    oracle set, stored weights and what was measured on demand: the page redraws without rebuilding it (the
    per-sample table's JSON alone takes ~0.5 s on Fashion-MNIST). Its files are made when downloaded."""
    measured = measured_for_report(after, dataset, request)
    key = (dataset.fingerprint(), request.key(), method, json.dumps(config, sort_keys=True, default=str), seconds,
           tuple(comparison.oracle_keys) if comparison is not None else None, stored.key if stored else None,
           tuple((name, id(value)) for name, value in sorted(measured.items())))
    memo = after.__dict__.setdefault("_audit_reports", {})
    if key not in memo:
        memo.clear()  # one report per model: the newest
        memo[key] = audit.audit_report(dataset, request, before, after, original_meta, method, config, seconds,
                                       comparison, stored, **measured)
    return memo[key]
