"""Was it forgotten? Gaps against the spread of K oracles, KLoM, and the verdict (issue 14, EVIDENCE.md).

- ``band``: the oracles' 99% prediction interval for one number, with a floor.
- ``oracle_spread``: per metric, the method's distance to the oracle mean beside the oracle-to-oracle distances.
- ``verdict``: *looks unseen* / *not forgotten* / *over-forgotten* / *inconclusive with k oracles* (``RULE``).
- ``judge``: all of the above for one model from Classifier objects (the pages, CLI and report call this).
Per-sample membership lives in ``core.eval.membership``, KLoM in ``core.eval.klom``, relearn time in
``core.eval.relearn``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations, permutations

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval import metrics as M
from core.eval.klom import klom_gauss, klom_report, summarize
from core.eval.membership import FLAG_Z, attack_summary, lira_offline, matched_heldout, membership_rows, split_margins
from core.models.base import Classifier

LEVEL = 0.99  # a fresh oracle falls inside each band this often (4 measures: ≈ 96% inside all of them)
FLOOR = 0.5  # points: the least half-width of a band on a % metric (EVIDENCE: floor of 0.5 points)
LEVEL_METRICS = ("TA", "RA", "FA", "MIA", "retained_TA", "forgotten_TA")
MIN_PER_SAMPLE_K = 3  # per-sample criteria need a leave-one-out fit on ≥ 2 oracles


def band(values: Sequence[float], floor: float = FLOOR, level: float = LEVEL, log: bool = False,
         known_sd: float | None = None) -> dict:
    """The range a fresh oracle's value falls in with probability ``level``: mean ± max(t_{m−1}·√(1+1/m)·sd,
    ``floor``) over m oracle values (Student-t prediction interval). EVIDENCE's starting rule, mean ± 2 sd, lets a
    left-out oracle fall outside 17–35% of the time at m = 2–4 (t tails), so the t quantile replaces the 2; it
    tends to 1.96 sd for many oracles. ``known_sd``: the measure's sampling sd is known from the samples
    themselves (a membership AUC: Mann–Whitney), so the sd is not estimated from m values alone: the normal
    quantile times √(1+1/m)·max(sd, ``known_sd``) (wider when the oracles vary more than sampling explains).
    ``log``: the interval of ln(values) (for skewed positive distances such as KLoM; mean, lo and hi are mapped
    back, sd and the floor stay in log units). NaN bounds below 2 values."""
    if log:
        b = band(np.log(np.maximum(np.asarray(values, np.float64), 1e-6)), floor, level)
        return {**b, **{key: float(np.exp(b[key])) for key in ("mean", "lo", "hi")}, "log": True}
    v = np.asarray(values, np.float64)
    m = len(v)
    mean = float(v.mean()) if m else float("nan")
    if m < 2:
        return {"mean": mean, "sd": float("nan"), "half_width": float("nan"), "lo": float("nan"),
                "hi": float("nan"), "m": m}
    sd = float(v.std(ddof=1))
    if known_sd is None:
        half = float(student_t.ppf((1 + level) / 2, m - 1)) * np.sqrt(1 + 1 / m) * sd
    else:
        half = float(norm.ppf((1 + level) / 2)) * np.sqrt(1 + 1 / m) * max(sd, known_sd)
    half = max(half, floor)
    return {"mean": mean, "sd": sd, "half_width": half, "lo": mean - half, "hi": mean + half, "m": m,
            "known_sd": known_sd}


def accuracy_floor(correct: np.ndarray, level: float = LEVEL) -> float:
    """Least half-width (points) of an accuracy band, from per-sample disagreement among the K oracles
    (``correct``: K × n booleans): with q_i the share of oracles right on sample i, a fresh seed's accuracy varies
    by sd = √(Σ q_i(1−q_i)·K/(K−1))/n; times the normal quantile and √(1+1/K). Guards the band against a few
    oracles that agree by chance."""
    c = np.atleast_2d(np.asarray(correct, np.float64))
    k, n = c.shape
    if k < 2 or n == 0:
        return 0.0
    q = c.mean(0)
    sd = np.sqrt((q * (1 - q)).sum() * k / (k - 1)) / n
    return float(norm.ppf((1 + level) / 2) * np.sqrt(1 + 1 / k) * sd * 100)


def auc_sd(n_pos: int, n_neg: int) -> float:
    """The sampling sd (points) of an AUC when members and non-members share one law,
    √((n_pos + n_neg + 1)/(12·n_pos·n_neg)) (Mann–Whitney): how much a model that never saw D_f varies."""
    return float(np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg)) * 100)


def _position(value: float, b: dict) -> str:
    if not (np.isfinite(value) and np.isfinite(b["lo"])):
        return "unknown"
    return "above" if value > b["hi"] else "below" if value < b["lo"] else "inside"


def _z(diff: float, scale: float) -> float:
    """diff / scale; 0 when diff is 0, ±inf when only the scale is (oracles that all agree)."""
    if diff == 0:
        return 0.0
    return diff / scale if scale > 0 else float(np.copysign(np.inf, diff))


def _percentile(value: float, pairs: list[float]) -> float:
    """% of oracle pair distances below ``value`` (ties count half)."""
    if not pairs:
        return float("nan")
    p = np.asarray(pairs)
    return float(((p < value).mean() + 0.5 * (p == value).mean()) * 100)


def _pairs_entry(method: float, pairs: list[float], floor: float, level: float) -> dict:
    b = band(pairs, floor, level)
    return {"method": method, "pairs_mean": b["mean"], "pairs_sd": b["sd"], "n_pairs": len(pairs),
            "z": (method - b["mean"]) / b["sd"] if b["sd"] > 0 else float("nan"),
            "percentile": _percentile(method, pairs), "band": [b["lo"], b["hi"]],
            "within": bool(method <= b["hi"]) if np.isfinite(b["hi"]) else None}


def oracle_spread(method_metrics: dict, oracle_metrics_list: Sequence[dict], method_test_probs=None,
                  oracle_test_probs: Sequence[np.ndarray] | None = None, names: Sequence[str] | None = None,
                  level: float = LEVEL) -> dict:
    """The method against K oracles, per metric (issue 14 item 2; EVIDENCE "Oracles").

    Level metrics (TA, RA, FA, MIA, and the class-request splits when present): the method's value, the oracle
    mean ± sd, ``gap`` = |method − oracle mean|, ``z`` = (method − mean)/(sd·√(1+1/K)) (≈ N(0,1) for a fresh
    oracle), the prediction ``band`` and ``within``; beside them the oracle-to-oracle distances |o_i − o_j| over
    the K(K−1)/2 pairs (mean ± sd, n) and ``percentile``: where the method's mean distance to the oracles lies
    among those pair distances (≈ 50 for an oracle-like model; both distances have the same law then).
    With test probabilities, PG (% disagreement) and KL (KL(oracle‖model), nats): the method's mean over the
    oracles against the oracle pairs (KL over ordered pairs, K(K−1)). Needs K ≥ 1; spreads are NaN for K = 1."""
    k = len(oracle_metrics_list)
    if k == 0:
        raise ValueError("no oracle has finished: a gap needs at least one oracle, a spread at least two")
    names = names or [n for n in LEVEL_METRICS if n in method_metrics and all(n in o for o in oracle_metrics_list)]
    out: dict[str, dict] = {}
    for name in names:
        m, vals = float(method_metrics[name]), [float(o[name]) for o in oracle_metrics_list]
        b = band(vals, FLOOR, level)
        pairs = [abs(a - c) for a, c in combinations(vals, 2)]
        entry = _pairs_entry(float(np.mean([abs(m - v) for v in vals])), pairs, FLOOR, level)
        entry.update(method=m, oracle_mean=b["mean"], oracle_sd=b["sd"], gap=abs(m - b["mean"]),
                     to_oracles=entry["method"], band=[b["lo"], b["hi"]], position=_position(m, b),
                     within=_position(m, b) == "inside" if k > 1 else None,
                     z=_z(m - b["mean"], b["sd"] * np.sqrt(1 + 1 / k)) if k > 1 else float("nan"))
        out[name] = entry
    if method_test_probs is not None and oracle_test_probs is not None:
        o = list(oracle_test_probs)
        pg = [M.prediction_gap(method_test_probs, q) for q in o]
        out["PG"] = _pairs_entry(float(np.mean(pg)), [M.prediction_gap(a, c) for a, c in combinations(o, 2)],
                                 FLOOR, level)
        kl = [M.kl_divergence(q, method_test_probs) for q in o]
        out["KL"] = _pairs_entry(float(np.mean(kl)), [M.kl_divergence(a, c) for a, c in permutations(o, 2)],
                                 0.0, level)
    return {"k": k, "n_pairs": k * (k - 1) // 2, "level": level, "metrics": out}


# ---- the verdict ---------------------------------------------------------------------------------------------

RULE = (
    "Each measure gets a band: where a fresh oracle's value falls 99% of the time, the mean ± t·√(1+1/m)·sd of the "
    "m oracle values (a Student-t prediction interval), never narrower than a floor: 0.5 points; for an accuracy, "
    "the spread the oracles' per-sample disagreement implies; 1.0 for the mean z. A membership AUC's sampling sd is "
    "known (Mann–Whitney), so its band is the mean ± z·√(1+1/m)·max(sd, that sampling sd), with the normal "
    "quantile z. KLoM's band is taken on a log scale. Sample requests (random, ids) are judged on forget accuracy, "
    "the membership AUC (offline LiRA against the oracles, D_f vs held-out test samples with D_f's class mix), the "
    "mean per-sample z on D_f and KLoM-Gauss P95 on D_f. Class requests replace the membership AUC by the forgotten "
    "classes' test accuracy: a class-level attack is not membership. The oracles' own values for the per-sample "
    "measures come from leaving each oracle out in turn, so these need 3 oracles; with 2 only the accuracies and "
    "the loss-attack AUROC count. In order: fewer than 2 oracles: inconclusive with k oracles. Above the band on "
    "any measure (for KLoM, with D_f's margins above the oracles'): not forgotten. Below the band on any measure: "
    "over-forgotten, the deletion itself is detectable. The untouched original inside every band: inconclusive, "
    "the request is too small to tell. Otherwise: looks unseen. Beside the verdict, not deciding it: the test "
    "accuracy on what the model should keep (the retained classes for a class request); below the oracles' band and "
    "below the original's value by more than the band's half-width, the sentence says the model lost what it should "
    "keep."
)

SCENARIOS = {
    "class": "Class request: judged on forget accuracy, the forgotten classes' test accuracy, per-sample margins "
             "and KLoM. An oracle's forget accuracy is near 0 and a class-level attack is not membership.",
    "sample": "Sample request: judged on forget accuracy, the membership AUC against a class-matched held-out set, "
              "per-sample margins and KLoM.",
}


def criterion(name: str, label: str, value: float, oracle_values: Sequence[float], original: float | None = None,
              floor: float = FLOOR, level: float = LEVEL, unit: str = "%", distance: bool = False,
              direction: str = "above", known_sd: float | None = None, counts: bool = True) -> dict:
    """One measure of the verdict: the method's value, the oracles' band (``band``; ``known_sd`` for a measure
    whose sampling sd is known) and where the method and the original lie. A ``distance`` (≥ 0, e.g. KLoM; its
    band is taken on a log scale, being skewed) only counts when above its band, on the side ``direction`` says.
    ``counts`` False: shown beside the verdict's measures (what the model keeps) without deciding it."""
    b = band(oracle_values, floor, level, log=distance, known_sd=known_sd)
    if unit == "%" and np.isfinite(b["lo"]):  # a percentage lies in 0-100: the band is shown within it
        b = {**b, "lo": max(b["lo"], 0.0), "hi": min(b["hi"], 100.0)}
    pos = _position(float(value), b)
    effective = direction if distance and pos == "above" else "inside" if distance and pos == "below" else pos
    return {"name": name, "label": label, "value": float(value), "oracle_values": [float(v) for v in oracle_values],
            "original": None if original is None else float(original), "band": b, "unit": unit,
            "distance": distance, "position": pos, "effective": effective, "counts": counts,
            "original_position": _position(float(original), b) if original is not None else "unknown"}


def in_verdict(c: dict) -> str:
    """Whether criterion ``c`` decides the verdict, as the criteria tables say it."""
    return "yes" if c.get("counts", True) else "no: what the model keeps"


def _fmt(c: dict, v: float) -> str:
    return f"{v:.1f}{c['unit']}" if c["unit"] == "%" else f"{v:.2f}"


def _describe(c: dict) -> str:
    """'its <measure> (<value>) lies above the oracles' band (<lo>–<hi>)', and how near the original it is."""
    b, where = c["band"], c["position"]
    text = f"its {c['label']} ({_fmt(c, c['value'])}) lies {where} the oracles' band " \
           f"({_fmt(c, b['lo'])}–{_fmt(c, b['hi'])})"
    if c["distance"]:
        text += f" with D_f's margins {c['effective']} the oracles'"
    if c["original"] is not None and c["effective"] == "above":
        nearer = abs(c["value"] - c["original"]) < abs(c["value"] - b["mean"])
        text += (", nearer the original's " if nearer else ", part of the way to the original's ") + \
            _fmt(c, c["original"])
    return text


def verdict(criteria: Sequence[dict], k: int, scenario: str) -> dict:
    """The verdict from the measures (``RULE``, in order): fewer than 2 oracles → *inconclusive with k oracles*;
    any measure above its band → *not forgotten*; any below → *over-forgotten*; the original inside every band
    → *inconclusive* (too small to tell); else *looks unseen*. Returns verdict, sentence, rule, k, scenario,
    and the criteria it rests on."""
    n = f"{k} oracle" + ("" if k == 1 else "s")
    base = {"k": k, "scenario": scenario, "scenario_rule": SCENARIOS[scenario], "rule": RULE,
            "criteria": list(criteria)}
    if k < 2:
        return {**base, "verdict": "inconclusive",
                "sentence": f"Inconclusive with {n}: at least 2 oracles (retrained without D_f on other seeds) are "
                            "needed to measure how much a retrain itself varies."}
    usable = [c for c in criteria if c["position"] != "unknown" and c.get("counts", True)]
    # what the model keeps speaks only when lost: below the oracles' band and below the original's value by more
    # than the band's half-width (a retrain's retained-class accuracy can exceed the original's)
    damaged = [c for c in criteria if not c.get("counts", True) and c["position"] == "below"
               and (c["original"] is None or c["value"] < c["original"] - c["band"]["half_width"])]
    kept = "".join(f" Beside the verdict: {_describe(c)} and the original's {_fmt(c, c['original'])}: the model lost "
                   "what it should keep." for c in damaged)
    above = [c for c in usable if c["effective"] == "above"]
    below = [c for c in usable if c["effective"] == "below"]
    if above:
        extra = f"; below it on {', '.join(c['label'] for c in below)}" if below else ""
        return {**base, "verdict": "not forgotten",
                "sentence": f"Not forgotten (with {n}): {_describe(above[0])}{extra}.{kept}"}
    if below:
        return {**base, "verdict": "over-forgotten",
                "sentence": f"Over-forgotten (with {n}): {_describe(below[0])}; the deletion itself is "
                            f"detectable.{kept}"}
    if not any(c["original_position"] == "above" for c in usable):
        return {**base, "verdict": "inconclusive",
                "sentence": f"Inconclusive with {n}: the untouched original itself lies inside the oracles' band on "
                            f"every measure, so this request is too small to tell.{kept}"}
    return {**base, "verdict": "looks unseen",
            "sentence": f"Looks unseen (with {n}): inside the oracles' band on every measure "
                        f"({', '.join(c['label'] for c in usable)}).{kept}"}


def _per_sample(target_train: np.ndarray, target_test: np.ndarray, oracle_train: np.ndarray,
                oracle_test: np.ndarray, forget: np.ndarray, held: np.ndarray, fprs) -> dict:
    """A model's offline-LiRA evidence against some oracles: z on D_f, attack summary, mean z, flagged share,
    KLoM-Gauss P95 on D_f."""
    lf = lira_offline(target_train[forget], oracle_train[:, forget])
    lh = lira_offline(target_test[held], oracle_test[:, held])
    attack = attack_summary(lf["z"], lh["z"], fprs)
    return {"lira": lf, "attack": attack, "mean_z": float(lf["z"].mean()), "auc": attack["auc"],
            "flagged": float((lf["z"] > FLAG_Z).mean() * 100),
            "klom_p95": summarize(klom_gauss(target_train[forget], oracle_train[:, forget]))["p95"]}


def _summary(e: dict) -> dict:
    """What the report shows of ``_per_sample``: the attack summary, mean z, % flagged and KLoM-Gauss P95."""
    return {**e["attack"], "mean_z": e["mean_z"], "flagged": e["flagged"], "klom_p95": e["klom_p95"]}


def judge(model: Classifier, original: Classifier, oracles: Sequence[Classifier], dataset: Dataset,
          request: ForgetRequest, seed: int = 0, level: float = LEVEL, fprs: tuple[float, ...] = (0.01, 0.05)) -> dict:
    """Everything issue 14 asks of one model for one request, against the finished ``oracles`` (none may share the
    original's seed; the caller knows): the verdict (``verdict``) and its criteria, ``spread`` (``oracle_spread``),
    ``membership`` (offline LiRA of the model, the original and each left-out oracle, with ranked ``rows``),
    ``klom`` (forget / retain / val) and the class-matched ``heldout`` test rows. Uses the models' memoised split
    probabilities. With no oracle, a verdict of inconclusive and nothing else."""
    k = len(oracles)
    scenario = "class" if request.classes else "sample"
    if len(request.ids) == 0:
        raise ValueError("the request has no forgotten sample: there is nothing to judge")
    if k == 0:
        return {**verdict([], 0, scenario), "spread": None, "membership": None, "klom": None, "heldout": None}
    forget = np.flatnonzero(request.mask(dataset.num_train))
    retain = np.flatnonzero(~request.mask(dataset.num_train))
    held = matched_heldout(dataset.y_train[forget], dataset.y_test, seed)
    mets = [M.split_metrics(m, dataset, request) for m in (model, original, *oracles)]
    test_probs = [o.split_proba(dataset, "test") for o in oracles]
    spread = oracle_spread(mets[0], mets[2:], model.split_proba(dataset, "test"), test_probs, level=level)
    tr = [split_margins(m, dataset, "train") for m in (model, original, *oracles)]
    te = [split_margins(m, dataset, "test") for m in (model, original, *oracles)]
    o_tr, o_te = np.stack(tr[2:]), np.stack(te[2:])
    right = np.stack([o.split_proba(dataset, "train")[forget].argmax(1) for o in oracles]) == dataset.y_train[forget]
    crit = [criterion("FA", "forget accuracy", mets[0]["FA"], [m["FA"] for m in mets[2:]], mets[1]["FA"],
                      floor=max(FLOOR, accuracy_floor(right, level)), level=level)]
    if scenario == "class":
        gone = np.flatnonzero(np.isin(dataset.y_test, request.classes))
        right = np.stack([p[gone].argmax(1) for p in test_probs]) == dataset.y_test[gone]
        crit.append(criterion("forgotten_TA", "forgotten class's test accuracy", mets[0]["forgotten_TA"],
                              [m["forgotten_TA"] for m in mets[2:]], mets[1]["forgotten_TA"],
                              floor=max(FLOOR, accuracy_floor(right, level)), level=level))
    # what the model keeps, shown beside the verdict without deciding it: test accuracy on the retained classes
    # (a class request) or on every test image (a sample request)
    kept = np.flatnonzero(~np.isin(dataset.y_test, request.classes)) if scenario == "class" \
        else np.arange(len(dataset.y_test))
    right = np.stack([p[kept].argmax(1) for p in test_probs]) == dataset.y_test[kept]
    kept_name = "retained_TA" if scenario == "class" else "TA"
    crit.append(criterion(kept_name, "retained classes' test accuracy" if scenario == "class" else "test accuracy",
                          mets[0][kept_name], [m[kept_name] for m in mets[2:]], mets[1][kept_name],
                          floor=max(FLOOR, accuracy_floor(right, level)), level=level, counts=False))
    membership = klom_out = None
    if k >= 2:
        klom_out = klom_report({"forget": tr[0][forget], "retain": tr[0][retain], "val": te[0]},
                               {"forget": o_tr[:, forget], "retain": o_tr[:, retain], "val": o_te})
    if k >= MIN_PER_SAMPLE_K:
        ev = _per_sample(tr[0], te[0], o_tr, o_te, forget, held, fprs)
        ev_orig = _per_sample(tr[1], te[1], o_tr, o_te, forget, held, fprs)
        rest = [np.arange(k) != j for j in range(k)]
        loo = [_per_sample(tr[2 + j], te[2 + j], o_tr[r], o_te[r], forget, held, fprs) for j, r in enumerate(rest)]
        if scenario == "sample":
            crit.append(criterion("membership_auc", "membership AUC", ev["auc"], [e["auc"] for e in loo],
                                  ev_orig["auc"], level=level, known_sd=auc_sd(len(forget), len(held))))
        crit.append(criterion("mean_z", "mean per-sample z on D_f", ev["mean_z"], [e["mean_z"] for e in loo],
                              ev_orig["mean_z"], floor=1.0, level=level, unit=""))
        side = "above" if ev["mean_z"] >= np.mean([e["mean_z"] for e in loo]) else "below"
        crit.append(criterion("klom_p95", "KLoM-Gauss P95 on D_f", ev["klom_p95"], [e["klom_p95"] for e in loo],
                              ev_orig["klom_p95"], floor=0.25, level=level, unit="", distance=True, direction=side))
        membership = {"method": _summary(ev), "original": _summary(ev_orig), "oracles_loo": [_summary(e) for e in loo],
                      "rows": membership_rows(forget, dataset.y_train[forget], tr[0][forget], ev["lira"])}
    elif scenario == "sample":  # 2 oracles: the loss attack's AUROC stands in for membership
        crit.append(criterion("MIA", "loss-attack AUROC", mets[0]["MIA"], [m["MIA"] for m in mets[2:]],
                              mets[1]["MIA"], level=level, known_sd=auc_sd(len(forget), len(dataset.y_test))))
    result = verdict(crit, k, scenario)
    result.update(spread=spread, membership=membership, klom=klom_out, heldout=held,
                  loss_mia_matched=M.mia_auroc(model.split_proba(dataset, "train")[forget], dataset.y_train[forget],
                                               model.split_proba(dataset, "test")[held], dataset.y_test[held]))
    return result
