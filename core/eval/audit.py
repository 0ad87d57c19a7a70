"""An audit of one deletion that a person can file: what was asked, what was done, and whether it was forgotten.

The report holds the request (ids and a content hash), the original and the unlearned model with their weight
hashes (post-hoc unlearned weights are stored, so the hash can be checked against the file), the method and its
config, the K oracles it was judged against with their seeds and hashes, the verdict with its rule and every
criterion it rests on, each metric against the oracle spread, KLoM, the per-sample membership table, what a
by-design model's memory still holds (read from the memory, not assumed), and each forgotten sample's loss
exposure. Everything in it is computed from the models (issue 14 item 8; EVIDENCE.md).
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval import metrics as M
from core.eval.evidence import in_verdict
from core.models.base import Classifier

EXPOSURE_EXPLANATION = (
    "Exposure of a forgotten sample: % of unseen images (test images of the same classes: for a class request "
    "those classes', for listed ids a class-matched set, for a random share the whole test set) whose loss is "
    "higher than the sample's own. 50 = as typical as an unseen image; near 100 = "
    "it looks like a training member. The mean exposure over the forgotten samples equals the MIA AUROC.")


def ids_sha256(ids) -> str:
    """SHA-256 of the sorted unique forgotten ids, written one per line: anyone holding the id list can check it."""
    return hashlib.sha256("\n".join(map(str, np.unique(np.asarray(ids, np.int64)))).encode()).hexdigest()


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


def _unlearned(model_meta: dict, stored, method: str, method_config: dict | None) -> dict:
    """The unlearned model's weights: the stored file of a post-hoc run (``store.StoredModel``), the user's own
    file for weights unlearned elsewhere (``workflow.SUPPLIED``), or for a by-design deletion the original's
    network, which the deletion does not change."""
    from core.workflow import SUPPLIED

    if method == SUPPLIED and method_config:
        return {"weights_sha256": method_config["sha256"], "supplied_file": method_config["file"],
                "note": "weights unlearned elsewhere and supplied for this audit; the SHA-256 is of the file as "
                        "supplied, so the auditor can match it against the file they were given"}
    if stored is None:
        return {"weights_sha256": model_meta.get("weights_sha256"), "stored_key": model_meta.get("key"),
                "note": "a by-design deletion edits the model's memory and moves no weight: the network is the "
                        "original's; the memory check below reads what the memory still holds"}
    return {"weights_sha256": stored.meta.get("weights_sha256"), "stored_key": stored.key,
            "stored_file": str(stored.path / "weights.safetensors")}


def _spread_rows(comparison) -> list[dict]:
    """Each metric of the comparison against the oracle spread (``evidence.oracle_spread``)."""
    rows = []
    for name, e in (comparison.spread or {}).get("metrics", {}).items():
        rows.append({"metric": name, "after": e["method"], "oracle_mean": e.get("oracle_mean"),
                     "oracle_sd": e.get("oracle_sd"), "gap": e.get("gap"),
                     "to_oracles": e.get("to_oracles", e["method"]), "pairs_mean": e["pairs_mean"],
                     "pairs_sd": e["pairs_sd"], "n_pairs": e["n_pairs"], "percentile": e["percentile"],
                     "position": e.get("position", "inside" if e["within"] else "above" if e["within"] is False
                                       else "unknown")})
    return rows


def audit_report(dataset: Dataset, request: ForgetRequest, original: Classifier, unlearned: Classifier,
                 model_meta: dict, method: str, method_config: dict | None, seconds: float | None, comparison=None,
                 unlearned_weights=None, top: int = 20, residue: dict | None = None,
                 relearn: dict | None = None) -> dict:
    """The whole report as JSON-ready values; ``report_markdown`` renders it for people. ``model_meta``: the
    original's stored metadata; ``comparison``: the ``workflow.Comparison`` of ``unlearned`` against the finished
    oracles (None: none has finished, and the report says so); ``unlearned_weights``: the ``store.StoredModel``
    of a post-hoc run's unlearned weights (None for a by-design deletion and for supplied weights, whose file is
    named by ``method_config``); ``seconds``: None when not measured here (supplied weights); ``residue``:
    ``residue.residue`` of the unlearned model and ``relearn``: the relearn-time reading (metric, target,
    target_text, rows, ain, curves), each included when it was measured."""
    from core import store  # versions of the software that computed the report

    test_p, train_p = unlearned.split_proba(dataset, "test"), unlearned.split_proba(dataset, "train")
    before = M.split_metrics(original, dataset, request)
    after = M.model_metrics(test_p, train_p, dataset, request)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": store.versions(),
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "train_size": int(dataset.num_train)},
        "request": {"description": request.description, "kind": request.kind, "key": request.key(),
                    "samples": len(request), "classes": list(request.classes), "ids_sha256": ids_sha256(request.ids)},
        "original": {"kind": model_meta.get("kind"), "key": model_meta.get("key"),
                     "weights_sha256": model_meta.get("weights_sha256"), "config": model_meta.get("config"),
                     "train_config": model_meta.get("train_config"),
                     "seed": (model_meta.get("train_config") or {}).get("seed")},
        "unlearned": _unlearned(model_meta, unlearned_weights, method, method_config),
        "method": {"name": method, "config": method_config, "seconds": None if seconds is None else float(seconds)},
        "metrics": {"before": _plain(before), "after": _plain(after)},
    }
    check = getattr(unlearned, "memory_check", None)
    if callable(check):
        from core.purge import remaining

        report["memory"] = {**check(request.ids), "artifacts": remaining(unlearned, request.ids)}
    exposure = sample_exposure(train_p, test_p, dataset, request)
    if comparison is not None:
        report["oracles"] = {"k": comparison.k, "seeds": comparison.oracle_seeds, "models": comparison.oracles}
        report["verdict"] = _plain({"verdict": comparison.verdict, "sentence": comparison.sentence,
                                    "scenario": comparison.scenario, "scenario_rule": comparison.scenario_rule,
                                    "rule": comparison.rule, "criteria": comparison.criteria})
        report["metrics"]["oracle_mean"] = _plain(comparison.oracle_metrics)
        report["metrics"]["gaps"] = {k: comparison.metrics[k] for k in ("PG", "KL", "AvgGap")}
        report["comparison"] = _plain(_spread_rows(comparison))
        report["klom"] = _plain(comparison.klom)
        report["membership"] = _plain(comparison.membership)
        report["attacks"] = _plain(comparison.attacks)
    if residue is not None:
        report["weights_residue"] = _plain(residue)
    if relearn is not None:
        report["relearn"] = _plain(relearn)
    order = np.argsort(-exposure, kind="stable")[:top]
    ids, labels = np.asarray(request.ids), dataset.y_train[list(request.ids)]
    report["exposure"] = {
        "explanation": EXPOSURE_EXPLANATION, "mean": float(exposure.mean()),
        "share_above_90": float((exposure > 90).mean() * 100),
        "most_exposed": [{"id": int(ids[i]), "label": int(labels[i]), "exposure": float(exposure[i])} for i in order],
    }
    oracle_auroc = [a["loss_auroc"] for name, a in (comparison.attacks if comparison else {}).items()
                    if name.startswith("oracle")]
    if oracle_auroc:  # the mean exposure is the loss-attack AUROC: the oracles' is what never seen looks like
        report["exposure"]["oracle_mean"] = float(np.mean(oracle_auroc))
    return report


def _plain(metrics: dict) -> dict:
    return json.loads(json.dumps(metrics, default=float))


def _num(value, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def _verdict_lines(r: dict) -> list[str]:
    if "verdict" not in r:
        return ["No oracle had finished when this report was made: there is no verdict, only the model's own "
                "numbers."]
    v, o = r["verdict"], r["oracles"]
    lines = [f"**{v['verdict']}**: {v['sentence']}", "",
             f"- Judged against {o['k']} oracle(s), retrained without the request on seeds "
             f"{', '.join(map(str, o['seeds']))} (the original's seed: {r['original']['seed']}).",
             f"- Which rule applies: {v['scenario_rule']}", "",
             "| measure | method | oracles' band | oracle mean ± sd (m) | original | method lies | original lies | "
             "in the verdict |", "|---|---|---|---|---|---|---|---|"]
    for c in v["criteria"]:
        b = c["band"]
        lines.append(f"| {c['label']} | {_num(c['value'])} | {_num(b['lo'])} – {_num(b['hi'])} | {_num(b['mean'])} ± "
                     f"{_num(b['sd'])} ({b['m']}) | {_num(c['original'])} | {c['effective']} | "
                     f"{c['original_position']} | {in_verdict(c)} |")
    return lines + ["", f"The rule: {v['rule']}"]


def _evidence_lines(r: dict) -> list[str]:
    if "comparison" not in r:
        return []
    lines = ["", "## Against the oracle spread",
             "| metric | after | oracle mean ± sd | distance to oracle mean | oracle-to-oracle mean ± sd (pairs) | "
             "percentile | lies |", "|---|---|---|---|---|---|---|"]
    for row in r["comparison"]:
        lines.append(f"| {row['metric']} | {_num(row['after'], 3)} | {_num(row['oracle_mean'])} ± "
                     f"{_num(row['oracle_sd'])} | {_num(row['gap'])} | {_num(row['pairs_mean'], 3)} ± "
                     f"{_num(row['pairs_sd'], 3)} ({row['n_pairs']}) | {_num(row['percentile'], 0)} | "
                     f"{row['position']} |")
    if r.get("klom"):
        lines += ["", "## KLoM per split (P50 / P95)", "| split | KLoM-Gauss | its P95 if no difference | KLoM | "
                  "indicative |", "|---|---|---|---|---|"]
        for split, e in r["klom"].items():
            g = e.get("klom_gauss", {})
            lines.append(f"| {split} | {_num(g.get('p50'))} / {_num(g.get('p95'))} | {_num(g.get('null_p95'))} | "
                         f"{_num(e['klom']['p50'])} / {_num(e['klom']['p95'])} | {e['indicative']} |")
    lines += ["", "## Membership attacks", "| model | loss-attack AUROC | SVC MIA-efficacy |", "|---|---|---|"]
    lines += [f"| {name} | {_num(a['loss_auroc'])} | {_num(a['svc_efficacy'])} |" for name, a in r["attacks"].items()]
    mem = r.get("membership")
    if mem:
        lines += ["", "Offline LiRA against the oracles (D_f vs class-matched held-out samples):", "",
                  "| model | AUC | TPR at 1% FPR | TPR at 5% FPR | mean z |", "|---|---|---|---|---|"]
        models = [("method", mem["method"]), ("original", mem["original"])]
        models += [(f"oracle {i} left out", s) for i, s in enumerate(mem["oracles_loo"], 1)]
        for name, s in models:
            lines.append(f"| {name} | {_num(s['auc'])} | {_num(s['tpr_at']['1%']['tpr'])} | "
                         f"{_num(s['tpr_at']['5%']['tpr'])} | {_num(s['mean_z'])} |")
        lines += ["", f"Per-sample table (JSON: membership.rows, {len(mem['rows']):,} rows); the most member-like:", "",
                  "| rank | id | label | margin | oracles' margin | z | flag |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {w['rank']} | {w['train_id']} | {w['label']} | {_num(w['margin'])} | {_num(w['oracle_margin'])} "
                  f"| {_num(w['z'])} | {w['flag']} |" for w in mem["rows"][:10]]
    return lines


def _weights_lines(r: dict) -> list[str]:
    lines = []
    res = r.get("weights_residue")
    if res:
        lines += ["", f"## What the weights alone still reveal ({res['oracle_k']} oracles)",
                  "| measure | unlearned | original | oracles mean ± sd | oracles' band | lies |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {m['label']} | {_num(m['model'])} | {_num(m['original'])} | {_num(m['oracle_mean'])} ± "
                  f"{_num(m['oracle_sd'])} | {_num(m['band'][0])} to {_num(m['band'][1])} | {m['position']} |"
                  for m in res["measures"]]
        lines += ["", "| layer | 1 − CKA to the oracles | original's | oracle pairs mean ± sd | within their band |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c['layer']} | {_num(c['to_oracles'], 3)} | {_num(c.get('original_to_oracles'), 3)} | "
                  f"{_num(c['pairs_mean'], 3)} ± {_num(c['pairs_sd'], 3)} | {c['within']} |" for c in res["cka"]]
    rl = r.get("relearn")
    if rl:
        ain = rl["ain"].get("ain")
        lines += ["", "## Relearn time", f"Target: {rl['target_text']}. Anamnesis Index: "
                  + (f"{ain:.2f} (≈ 1 ideal, ≪ 1 residual knowledge)" if ain is not None else "not defined"), "",
                  "| model | steps | reached |", "|---|---|---|"]
        for w in rl["rows"]:
            steps = w["steps"] if w["steps"] is not None else f"more than {w['cap']}"
            lines.append(f"| {w['model']} | {steps} | {w['reached']} |")
    return lines


def _took(seconds: float | None) -> str:
    return "time not measured here" if seconds is None else f"{seconds * 1000:.1f} ms"


def _processor(versions: dict) -> str:
    """Where the report was computed (reports written before this was recorded do not say)."""
    if not versions.get("cpu"):
        return ""
    return (f", on {versions['cpu']} with its {versions.get('cpu_kernels', '?')} kernels"
            + (f" and {versions['cuda_device']}" if versions.get("cuda_device") else ""))


def report_markdown(report: dict, class_names: tuple[str, ...] | None = None) -> str:
    """The report as Markdown a person can read, print or attach to a ticket."""
    r, req = report, report["request"]
    orig, unl = r["original"], r["unlearned"]
    lines = [f"# Unlearning audit: {req['description']}", "",
             f"Created {r['created']} with Unlearning Explorer (python {r['versions']['python']}, "
             f"torch {r['versions']['torch']}{_processor(r['versions'])}).", "", "## Verdict", *_verdict_lines(r), "",
             "## Request",
             f"- Dataset: {r['dataset']['name']} (data fingerprint `{r['dataset']['fingerprint']}`, "
             f"{r['dataset']['train_size']:,} training samples)",
             f"- Forgotten: {req['samples']:,} samples ({req['kind']} request"
             + (f", classes {', '.join(map(str, req['classes']))}" if req["classes"] else "") + ")",
             f"- Request key `{req['key']}`; SHA-256 of the sorted ids, one per line: `{req['ids_sha256']}`",
             "", "## Models and method",
             f"- Original: {orig['kind']} `{orig['key']}`, seed {orig['seed']}, weights SHA-256 "
             f"`{orig['weights_sha256']}`",
             f"- Unlearned: weights SHA-256 `{unl['weights_sha256']}`"
             + (f", stored as `{unl['stored_file']}`" if "stored_file" in unl else
                f", the file `{unl['supplied_file']}` ({unl['note']})" if "supplied_file" in unl else
                f" ({unl.get('note', '')})"),
             f"- Method: {r['method']['name']}, {_took(r['method']['seconds'])}; config "
             f"`{json.dumps(r['method']['config'])}`"]
    for i, o in enumerate(r.get("oracles", {}).get("models", []), 1):
        lines.append(f"- Oracle {i}: `{o['key']}`, seed {o['seed']}, weights SHA-256 `{o['weights_sha256']}`"
                     + (f", trained in {o['train_s']:.0f} s" if o["train_s"] else "")
                     + (" (its recorded predictions, `python -m core record-oracles`)" if o.get("recorded") else ""))
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
        if mem.get("artifacts"):
            lines += ["", "Everything the model object carries, and how many rows of the forgotten samples each holds "
                      "(a purged copy, `python -m core audit --purged-copy`, keeps none of them):", "",
                      "| artifact | forgotten rows | in a purged copy |", "|---|---|---|"]
            lines += [f"| {a['artifact']} | {a['forgotten_rows']:,} | {a['in_purged_copy']} |"
                      for a in mem["artifacts"]]
    lines += _evidence_lines(r)
    lines += _weights_lines(r)
    exp = r["exposure"]
    lines += ["", "## Loss exposure of the forgotten samples", exp["explanation"], "",
              f"- Mean exposure {exp['mean']:.2f} (the loss-attack AUROC); share above 90: {exp['share_above_90']:.2f}%"
              + (f"; the oracles' mean exposure: {exp['oracle_mean']:.2f}" if "oracle_mean" in exp else ""), "",
              "| id | label | exposure |", "|---|---|---|"]
    for row in exp["most_exposed"]:
        label = class_names[row["label"]] if class_names else row["label"]
        lines.append(f"| {row['id']} | {label} | {row['exposure']:.1f} |")
    return "\n".join(lines) + "\n"
