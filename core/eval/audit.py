"""An audit of one deletion that a person can file: what was asked, what was done, how it compares.

The report holds the request (ids and a content hash), the model and method with their configs and weight
hashes, the metrics after unlearning next to the retrained oracle and the oracle-vs-oracle noise floor,
what a by-design model's memory still holds of the forgotten samples (read from the memory, not assumed),
and each forgotten sample's membership exposure. Everything in it is computed here from the models.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval import metrics as M
from core.models.base import Classifier

COMPARED = ("TA", "RA", "FA", "MIA")
EXPOSURE_EXPLANATION = (
    "Exposure of a forgotten sample: % of unseen images (the test set; for a class request, the test images of "
    "those classes) whose loss is higher than the sample's own. 50 = as typical as an unseen image; near 100 = "
    "it looks like a training member. The mean exposure over the forgotten samples equals the MIA AUROC.")


def ids_sha256(request: ForgetRequest) -> str:
    """SHA-256 of the sorted forgotten ids, written one per line: anyone holding the id list can check it."""
    return hashlib.sha256("\n".join(str(i) for i in request.ids).encode()).hexdigest()


def sample_exposure(train_probs: np.ndarray, test_probs: np.ndarray, dataset: Dataset,
                    request: ForgetRequest) -> np.ndarray:
    """Per forgotten sample (in request order), its exposure in % (see EXPOSURE_EXPLANATION); ties count half."""
    ids = np.asarray(request.ids)
    held = M.heldout_for(request, dataset)
    forget_loss = M.sample_loss(train_probs[ids], dataset.y_train[ids])
    held_loss = np.sort(M.sample_loss(test_probs[held], dataset.y_test[held]))
    below_or_equal = np.searchsorted(held_loss, forget_loss, side="right")
    strictly_below = np.searchsorted(held_loss, forget_loss, side="left")
    higher = len(held_loss) - below_or_equal
    ties = below_or_equal - strictly_below
    return (higher + 0.5 * ties) / max(len(held_loss), 1) * 100


def audit_report(dataset: Dataset, request: ForgetRequest, original: Classifier, unlearned: Classifier,
                 model_meta: dict, method: str, method_config: dict | None, seconds: float,
                 oracle: Classifier | None = None, oracle_meta: dict | None = None,
                 noise_floor: dict | None = None, top: int = 20) -> dict:
    """The whole report as JSON-ready values; ``report_markdown`` renders it for people. ``noise_floor`` is
    ``metrics.noise_floor`` of the oracle and a reseeded one, as the caller's comparison already holds it."""
    from core import store  # versions of the software that computed the report

    test_p, train_p = unlearned.split_proba(dataset, "test"), unlearned.split_proba(dataset, "train")
    before = M.split_metrics(original, dataset, request)
    after = M.model_metrics(test_p, train_p, dataset, request)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": store.versions(),
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "train_size": int(dataset.num_train)},
        "request": {"description": request.description, "kind": request.kind, "key": request.key(),
                    "samples": len(request), "classes": list(request.classes), "ids_sha256": ids_sha256(request)},
        "model": {"kind": model_meta.get("kind"), "key": model_meta.get("key"),
                  "weights_sha256": model_meta.get("weights_sha256"), "config": model_meta.get("config"),
                  "train_config": model_meta.get("train_config")},
        "method": {"name": method, "config": method_config, "seconds": float(seconds)},
        "metrics": {"before": _plain(before), "after": _plain(after)},
    }
    check = getattr(unlearned, "memory_check", None)
    if callable(check):
        report["memory"] = check(request.ids)
    exposure = sample_exposure(train_p, test_p, dataset, request)
    rows = {"id": np.asarray(request.ids), "label": dataset.y_train[list(request.ids)], "exposure": exposure}
    if oracle is not None:
        o_test, o_train = oracle.split_proba(dataset, "test"), oracle.split_proba(dataset, "train")
        oracle_metrics = M.model_metrics(o_test, o_train, dataset, request)
        report["metrics"]["oracle"] = _plain(oracle_metrics)
        report["metrics"]["gaps"] = M.gap_metrics(after, test_p, oracle_metrics, o_test)
        report["oracle"] = {"key": (oracle_meta or {}).get("key"),
                            "weights_sha256": (oracle_meta or {}).get("weights_sha256"),
                            "train_s": ((oracle_meta or {}).get("train_log") or {}).get("train_s")}
        rows["oracle_exposure"] = sample_exposure(o_train, o_test, dataset, request)
        if noise_floor is not None:
            report["metrics"]["noise_floor"] = {k: noise_floor[k] for k in (*COMPARED, "PG") if k in noise_floor}
        report["comparison"] = [
            {"metric": k, "after": after[k], "oracle": oracle_metrics[k], "gap": abs(after[k] - oracle_metrics[k]),
             "noise_floor": report["metrics"].get("noise_floor", {}).get(k)} for k in COMPARED]
    order = np.argsort(-exposure, kind="stable")[:top]
    report["exposure"] = {
        "explanation": EXPOSURE_EXPLANATION, "mean": float(exposure.mean()),
        "share_above_90": float((exposure > 90).mean() * 100),
        "most_exposed": [{k: _scalar(v[i]) for k, v in rows.items()} for i in order],
    }
    if "oracle_exposure" in rows:
        report["exposure"]["oracle_mean"] = float(rows["oracle_exposure"].mean())
        report["exposure"]["oracle_share_above_90"] = float((rows["oracle_exposure"] > 90).mean() * 100)
    return report


def _scalar(value):
    return value.item() if isinstance(value, np.generic) else value


def _plain(metrics: dict) -> dict:
    return json.loads(json.dumps(metrics, default=float))


def report_markdown(report: dict, class_names: tuple[str, ...] | None = None) -> str:
    """The report as Markdown a person can read, print or attach to a ticket."""
    r, req = report, report["request"]
    lines = [f"# Unlearning audit: {req['description']}", "",
             f"Created {r['created']} with Unlearning Explorer (python {r['versions']['python']}, "
             f"torch {r['versions']['torch']}).", "", "## Request",
             f"- Dataset: {r['dataset']['name']} (data fingerprint `{r['dataset']['fingerprint']}`, "
             f"{r['dataset']['train_size']:,} training samples)",
             f"- Forgotten: {req['samples']:,} samples ({req['kind']} request"
             + (f", classes {', '.join(map(str, req['classes']))}" if req["classes"] else "") + ")",
             f"- Request key `{req['key']}`; SHA-256 of the sorted ids, one per line: `{req['ids_sha256']}`",
             "", "## Model and method",
             f"- Model: {r['model']['kind']} `{r['model']['key']}`, weights SHA-256 `{r['model']['weights_sha256']}`",
             f"- Method: {r['method']['name']}, {r['method']['seconds'] * 1000:.1f} ms; config "
             f"`{json.dumps(r['method']['config'])}`"]
    if "oracle" in r:
        train_s = r["oracle"]["train_s"]
        lines.append(f"- Oracle (retrained without the request): `{r['oracle']['key']}`"
                     + (f", trained in {train_s:.0f} s" if train_s else ""))
    if "memory" in r:
        mem = r["memory"]
        lines += ["", "## What the memory still holds (read from the model)",
                  f"- Entries in memory: {mem['memory_entries']:,}; forgotten samples still among them: "
                  f"**{mem['forgotten_in_memory']:,}** of {mem['forgotten_ids']:,}"]
        if "forgotten_token_max_abs" in mem:
            lines.append("- Largest value left in the forgotten samples' exemplar tokens: "
                         f"{mem['forgotten_token_max_abs']:g}")
        if "sums_rel_diff_from_rebuilt" in mem:
            lines.append(f"- Class sums against sums rebuilt from the kept samples only: relative difference "
                         f"{mem['sums_rel_diff_from_rebuilt']:.1e}; counts match: {mem['counts_match_rebuilt']}")
        if "forgotten_in_knn_index" in mem:
            lines.append("- Forgotten samples the kNN-mode index still returns: "
                         f"**{mem['forgotten_in_knn_index']:,}**")
    lines += ["", "## Against the oracle"]
    if "comparison" in r:
        lines += ["| metric | after | oracle | gap | noise floor (oracle vs oracle) |", "|---|---|---|---|---|"]
        for row in r["comparison"]:
            floor = "n/a" if row["noise_floor"] is None else f"{row['noise_floor']:.2f}"
            lines.append(f"| {row['metric']} | {row['after']:.2f} | {row['oracle']:.2f} | {row['gap']:.2f} | {floor} |")
        gaps = r["metrics"]["gaps"]
        lines.append(f"\nPG {gaps['PG']:.2f} (test images predicted differently from the oracle, %), "
                     f"KL {gaps['KL']:.4f}, AvgGap {gaps['AvgGap']:.2f}.")
    else:
        lines.append("The oracle was not trained yet: only the model's own numbers are in this report.")
    exp = r["exposure"]
    lines += ["", "## Membership exposure of the forgotten samples", exp["explanation"], "",
              f"- Mean exposure {exp['mean']:.2f} (MIA AUROC); share above 90: {exp['share_above_90']:.2f}%"
              + (f"; the oracle: {exp['oracle_mean']:.2f} and {exp['oracle_share_above_90']:.2f}%"
                 if "oracle_mean" in exp else ""), "",
              "| id | label | exposure | oracle's exposure |", "|---|---|---|---|"]
    for row in exp["most_exposed"]:
        label = class_names[row["label"]] if class_names else row["label"]
        oracle = f"{row['oracle_exposure']:.1f}" if "oracle_exposure" in row else "n/a"
        lines.append(f"| {row['id']} | {label} | {row['exposure']:.1f} | {oracle} |")
    return "\n".join(lines) + "\n"
